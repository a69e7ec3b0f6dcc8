"""The fault-injection run, short: sample events through 3 workers while a seeded schedule
kills (SIGKILL, also with the RocksDB deleted), pauses past the session timeout (SIGSTOP/SIGCONT),
changes the assignment (a fourth worker comes and goes), sends hostile input, pauses the broker
(SIGSTOP 10 s), cuts every client connection and adds 200 ms of latency for 15 s; then 0
mismatched profiles, 0 lost and 0 double-applied events, every user's state found in a stable
group, and no worker ended by itself. `make chaos` runs the long one over several seeds."""
from __future__ import annotations

import pytest

from tests.harness import keep_artifacts
from tools.chaos.faults import FAULT_KINDS
from tools.chaos.run import run_chaos

pytestmark = pytest.mark.integration

# The broker's least session timeout (group.min.session.timeout.ms, 6 s) instead of the default
# 10 s, and the pause and the latency shortened to match: every fault still outlasts the
# session (a SIGSTOP lasts the session and 5 s more), in less time. `make chaos` runs the
# defaults.
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}
BROKER_PAUSE, LATENCY_FOR = 10.0, 15.0


@pytest.mark.timeout(900)
def test_short_chaos_run_loses_and_doubles_nothing(tmp_path):
    report = run_chaos(tmp_path / "chaos", users=1500, seed=7, hostile=1000, kills=2,
                       rate=3000, client_settings=CLIENT, broker_pause=BROKER_PAUSE,
                       latency_for=LATENCY_FOR)
    print("\n".join(report.lines()))
    if not report.ok:
        for log in ("logs", "run"):     # worker and broker logs (pytest's tmp dirs rotate)
            print(f"kept in {keep_artifacts(f'test_chaos/{log}', tmp_path / 'chaos' / log)}")
    kinds = {f.split()[2] for f in report.faults_done}
    assert kinds == set(FAULT_KINDS)
    assert report.users > 1000
    assert report.ok, report.lines()
