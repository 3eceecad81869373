"""The fault matrix collector: cells record (fault, step) -> outcome; the table is printed at the
end of the session and written to test-artifacts/fault_matrix.md.

Under pytest-xdist the cells are recorded on a worker; each test's cells travel with its report
(`user_properties`) to the main process, where tests/conftest.py collects them and prints the
table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

FAULTS = ["kill -9 of the run", "PostgreSQL restart", "metrics backend unreachable", "service process crash"]
STEPS = ["preflight", "expand migration", "backfill", "gate", "canary deploy", "traffic step", "promote", "contract"]
MATRIX: dict[tuple[str, str], str] = {}
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "fault_matrix.md"
REPORT_PROPERTY = "fault_matrix_cells"
_unreported: list[tuple[str, str, str]] = []  # cells of the running test, not yet on a report


def record(fault: str, step: str, outcome: str) -> None:
    assert fault in FAULTS and step in STEPS, (fault, step)
    MATRIX[(fault, step)] = outcome
    _unreported.append((fault, step, outcome))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001
    report = yield
    if _unreported:
        report.user_properties.append((REPORT_PROPERTY, list(_unreported)))
        _unreported.clear()
    return report


def collect(report: pytest.TestReport) -> None:
    """Cells a (possibly remote) test reported, into this process's MATRIX."""
    for name, cells in report.user_properties:
        if name == REPORT_PROPERTY:
            for fault, step, outcome in cells:
                MATRIX[(fault, step)] = outcome


def render() -> str:
    lines = ["| fault \\ step | " + " | ".join(STEPS) + " |", "|---" * (len(STEPS) + 1) + "|"]
    for fault in FAULTS:
        cells = [MATRIX.get((fault, step), "not run").replace("|", "/") for step in STEPS]
        lines.append(f"| {fault} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(terminalreporter) -> None:
    if not MATRIX:
        return
    table = render()
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text("# Fault matrix (tests/reliability/test_fault_matrix.py)\n\n" + table)
    terminalreporter.write_sep("=", "fault matrix (fault x step -> outcome)")
    terminalreporter.write(table)
    terminalreporter.write_line(f"written to {ARTIFACT}")
