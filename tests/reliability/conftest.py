"""The fault matrix collector: cells record (fault, step) -> outcome; the table is printed at the
end of the session and written to test-artifacts/fault_matrix.md."""

from __future__ import annotations

from pathlib import Path

FAULTS = ["kill -9 of the run", "PostgreSQL restart", "metrics backend unreachable", "service process crash"]
STEPS = ["preflight", "expand migration", "backfill", "gate", "canary deploy", "traffic step", "promote", "contract"]
MATRIX: dict[tuple[str, str], str] = {}
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "fault_matrix.md"


def record(fault: str, step: str, outcome: str) -> None:
    assert fault in FAULTS and step in STEPS, (fault, step)
    MATRIX[(fault, step)] = outcome


def render() -> str:
    lines = ["| fault \\ step | " + " | ".join(STEPS) + " |", "|---" * (len(STEPS) + 1) + "|"]
    for fault in FAULTS:
        cells = [MATRIX.get((fault, step), "not run").replace("|", "/") for step in STEPS]
        lines.append(f"| {fault} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not MATRIX:
        return
    table = render()
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text("# Fault matrix (tests/reliability/test_fault_matrix.py)\n\n" + table)
    terminalreporter.write_sep("=", "fault matrix (fault x step -> outcome)")
    terminalreporter.write(table)
    terminalreporter.write_line(f"written to {ARTIFACT}")
