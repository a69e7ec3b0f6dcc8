from __future__ import annotations

import re
import signal

import pytest

from deploy import broker as embedded
from tests.harness import WorkerProcess, keep_artifacts, start_broker


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _passed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.passed


@pytest.fixture
def broker(request, tmp_path):
    """A fresh embedded broker on a free port (Apache Kafka: ready about 2 s after the start,
    docs/BROKER.md "Start-up and JVM"). After a test that passed it is SIGKILLed (its data
    goes with the test's folder; a controlled shutdown takes 0.5-1 s), else stopped."""
    b = start_broker(tmp_path / "broker-run")
    yield b
    if _passed(request):
        embedded.kill(b.run_dir)
    else:
        embedded.stop(b.run_dir)


@pytest.fixture
def workers(request, tmp_path):
    """Factory for real worker processes; all are ended at teardown and their logs kept under
    test-artifacts/ when the test failed. After a test that passed they are SIGKILLed: nothing
    of them is looked at any more, and a graceful stop costs 1.5 s a worker, up to the session
    timeout when the group waits for a member killed by the test (their logs are written a
    line at a time: nothing is lost). After a failure they stop gracefully, all at once, so that
    the kept logs end with their shutdown."""
    started: list[WorkerProcess] = []

    def make(argv: list[str], web_port: int, name: str = "worker", env=None) -> WorkerProcess:
        w = WorkerProcess(argv, tmp_path / "logs" / f"{name}.log", web_port, env=env or {})
        started.append(w)
        return w

    yield make
    rep = getattr(request.node, "rep_call", None)
    passed = _passed(request)
    running = [w for w in started if w.alive()]
    for w in running:
        w.proc.send_signal(signal.SIGKILL if passed else signal.SIGTERM)
    for w in running:
        w.stop()            # waits (SIGKILL after its grace), removes the pid file
    if rep is not None and rep.failed:
        dest = keep_artifacts(re.sub(r"[^\w.-]", "_", request.node.nodeid), tmp_path / "logs")
        print(f"\nworker logs kept in {dest}")
