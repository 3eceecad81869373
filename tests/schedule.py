"""How `make test` hands files to its xdist workers: longest first, bound late.

xdist's `--dist loadfile` runs every test of a file on one worker but orders files by their
number of tests, so the few long end-to-end files (one to six tests each, minutes each) start
last and the run ends with one worker busy and the others idle. It also binds a worker's next
file while that worker still has two tests to run, which can queue a long file behind a long
test while another worker goes idle. `LongestFileFirst` starts files in the order of
`EXPECTED_SECONDS` (the rest after them, by number of tests, as xdist would) and gives a
worker its next file only when it is about to run the last test of the current one.
tests/conftest.py installs both: the order at collection, the scheduler for `--dist loadfile`.
"""

from __future__ import annotations

from collections import Counter

from xdist.scheduler import LoadFileScheduling

EXPECTED_SECONDS = {
    # seconds per file inside `make test` on the 2-core machine (junit XML, 2026-11-30); only the
    # order matters, so round figures do. Files not listed start after these.
    "tests/e2e/test_production_mode.py": 310,
    "tests/e2e/test_dg_project.py": 290,
    "tests/reliability/test_fault_matrix.py": 230,
    "tests/integration/test_byo_alembic_pg.py": 200,
    "tests/reliability/test_daemon_restart.py": 170,
    "tests/e2e/test_browser.py": 110,
    "tests/e2e/test_wheel.py": 80,
    "tests/integration/test_observability.py": 80,
    "tests/integration/test_release_jobs.py": 70,
    "tests/integration/test_sensors.py": 70,
    "tests/reliability/test_hostile_input.py": 65,
    "tests/integration/test_release_migrations.py": 55,
    "tests/integration/test_shadow_lint_pg.py": 55,
    "tests/integration/test_bake.py": 50,
    "tests/e2e/test_lineage_browser.py": 50,
    "tests/integration/test_local_platform.py": 50,
    "tests/reliability/test_secrets.py": 45,
    "tests/integration/test_job_structure.py": 40,
}


def longest_files_first(items: list) -> None:
    """Reorder collected tests in place: files by expected seconds, then by number of tests (most
    first, as xdist would); a file's tests stay together and in their order. Workers report this
    order to the scheduler, which keeps it."""
    files = [item.nodeid.split("::", 1)[0] for item in items]
    tests_in = Counter(files)
    first_seen: dict[str, int] = {}
    for i, file in enumerate(files):
        first_seen.setdefault(file, i)
    order = {id(item): (-EXPECTED_SECONDS.get(file, 0), -tests_in[file], first_seen[file], i)
             for i, (item, file) in enumerate(zip(items, files))}
    items.sort(key=lambda item: order[id(item)])


class LongestFileFirst(LoadFileScheduling):
    """`--dist loadfile` in the collected order (see `longest_files_first`), a worker's next file
    bound when it reaches the last test of the current one."""

    def __init__(self, config, log=None) -> None:
        config.option.loadscopereorder = False  # keep the order the workers collected
        super().__init__(config, log)

    def _reschedule(self, node) -> None:
        """xdist binds a file when a worker has <= 2 tests left; we wait for 1 (a worker cannot
        start its last test before it knows what follows, so it asks at once)."""
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)
