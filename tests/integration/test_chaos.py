"""The fault-injection run, short: sample events through 3 workers while a seeded schedule
kills (SIGKILL, also with the RocksDB deleted), pauses past the session timeout (SIGSTOP/SIGCONT),
changes the assignment (a fourth worker comes and goes) and sends hostile input; then 0
mismatched profiles, 0 lost and 0 double-applied events. `make chaos` runs the long one."""
from __future__ import annotations

import pytest

from deploy.chaos import run_chaos

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_short_chaos_run_loses_and_doubles_nothing(tmp_path):
    report = run_chaos(tmp_path / "chaos", users=1500, seed=7, hostile=1000, kills=2,
                       rate=3000)
    print("\n".join(report.lines()))
    kinds = {f.split()[2] for f in report.faults_done}
    assert kinds == {"sigkill", "wipe", "sigstop", "reassign", "hostile"}
    assert report.users > 1000
    assert report.ok, report.lines()
