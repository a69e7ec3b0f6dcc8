from __future__ import annotations

import re

import pytest

from deploy import broker as embedded
from tests.harness import WorkerProcess, keep_artifacts, start_broker


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def broker(tmp_path):
    """A fresh embedded broker on a free port (Apache Kafka: ready about 2 s after the start,
    docs/BROKER.md "Start-up and JVM")."""
    b = start_broker(tmp_path / "broker-run")
    yield b
    embedded.stop(b.run_dir)


@pytest.fixture
def workers(request, tmp_path):
    """Factory for real worker processes; all are stopped at teardown and their logs kept
    under test-artifacts/ when the test failed."""
    started: list[WorkerProcess] = []

    def make(argv: list[str], web_port: int, name: str = "worker", env=None) -> WorkerProcess:
        w = WorkerProcess(argv, tmp_path / "logs" / f"{name}.log", web_port, env=env or {})
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        dest = keep_artifacts(re.sub(r"[^\w.-]", "_", request.node.nodeid), tmp_path / "logs")
        print(f"\nworker logs kept in {dest}")
