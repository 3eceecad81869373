"""The project's own exceptions: each carries a message written for the person at the keyboard."""

from __future__ import annotations

from dataclasses import dataclass


class ReleaseError(Exception):
    """Base class: anything the CLI or a Dagster op reports as a clear, non-traceback error."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what is expected instead."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<manifest>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ManifestError(ReleaseError):
    """A manifest failed to load or validate; lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = len(problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the release manifest:"
        super().__init__("\n".join([header, *(f"  - {p}" for p in problems)]))


class PlanError(ReleaseError):
    """The requested release cannot be planned (unknown service, downgrade, incompatible API)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("cannot plan this release:\n" + "\n".join(f"  - {p}" for p in problems))


class IllegalTransition(ReleaseError):
    """A release was asked to move to a state its current state does not allow."""


class ReleaseAlreadyActive(ReleaseError):
    """A second release of a product was started while one is still active."""


class LedgerError(ReleaseError):
    """The ledger cannot be opened, migrated or read."""
