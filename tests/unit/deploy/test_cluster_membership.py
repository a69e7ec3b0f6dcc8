"""The pure parts of the cluster view: which requests need the token, the membership as the
workers serve it, where the CLI asks first, and when a job run counts as done."""
from __future__ import annotations

import pytest

from deploy.cluster import ENV_URL, Reply, first_workers
from deploy.cluster_jobs import JobOutcome
from deploy.workers import WorkerCallError
from features.config import parse_config
from streams.web.auth import needs_token
from streams.web.cluster import Member, Membership


@pytest.mark.parametrize("mode,method,path,needed", [
    ("writes", "GET", "/profiles/1", False),
    ("writes", "GET", "/cluster", False),
    ("writes", "POST", "/jobs/hourly", True),
    ("writes", "POST", "/restart", True),
    ("writes", "GET", "/cluster/relay", True),       # reaches every member: always
    ("all", "GET", "/profiles/1", True),
    ("all", "GET", "/profiles", True),
    ("all", "GET", "/cluster", True),
    ("all", "GET", "/dashboard/data", True),
    ("all", "GET", "/health", False),
    ("all", "GET", "/metrics", False),
    ("all", "GET", "/dashboard", False),             # the page holds no data
    ("all", "HEAD", "/health", False),
    ("all", "POST", "/health", True),
])
def test_which_requests_need_the_token(mode, method, path, needed):
    assert needs_token(mode, method, path) is needed


def test_auth_setting_defaults_to_writes_and_is_validated():
    assert parse_config({}, env={}).worker.auth == "writes"
    assert parse_config({}, env={"PROFILES_WORKER_AUTH": "all"}).worker.auth == "all"


def view(*members: Member, partitions: int = 4) -> Membership:
    return Membership(members[0].url, 1, 7, False, partitions, list(members))


def test_membership_round_trip_and_unassigned_partitions():
    v = view(Member("http://a:1", (0, 2), 7, 1), Member("http://b:1", (1,), 7))
    again = Membership.from_dict(v.to_dict())
    assert again == v and again.unassigned() == [3] and v.to_dict()["unassigned"] == [3]
    assert again.member("http://b:1/").partitions == (1,)
    assert again.member("http://c:1") is None


def test_the_first_worker_comes_from_url_then_env_then_local_then_config(tmp_path,
                                                                         monkeypatch):
    cfg = parse_config({"worker": {"web_port": 7000},
                        "embedded_broker": {"run_dir": str(tmp_path)}}, env={})
    monkeypatch.delenv(ENV_URL, raising=False)
    assert first_workers(cfg) == ["http://127.0.0.1:7000"]
    (tmp_path / "worker-2.pid").write_text("1")           # pid 1 is alive
    assert first_workers(cfg) == ["http://127.0.0.1:7001", "http://127.0.0.1:7000"]
    monkeypatch.setenv(ENV_URL, "w1:6066, http://w2:6066/")
    assert first_workers(cfg) == ["http://w1:6066", "http://w2:6066"]
    assert first_workers(cfg, ["http://x:1", "http://x:1/"]) == ["http://x:1"]


def report(*parts: int, aborted: tuple[int, ...] = (), error: str | None = None,
           drift: int = 0) -> dict:
    totals = {"published": len(parts)}
    if drift:
        totals["drift"] = {"users": drift}
    return {"instance": 1, "seconds": 0.1, "error": error, "backup": None, "totals": totals,
            "partitions": [{"partition": p, "aborted": "revoked" if p in aborted else None}
                           for p in parts]}


A, B = Member("http://a:1", (0, 1), 3), Member("http://b:1", (2, 3), 3)


def test_a_job_is_done_only_when_the_reports_cover_every_partition():
    ok = JobOutcome("hourly", 4, [Reply(A, report(0, 1)), Reply(B, report(2, 3))])
    assert ok.exit_code == 0 and ok.not_run() == []
    assert ok.lines()[-1] == ("hourly: published 4", False)

    down = JobOutcome("hourly", 4, [Reply(A, report(0, 1)),
                                    Reply(B, error=WorkerCallError("no worker answers"))])
    text = "\n".join(line for line, _ in down.lines())
    assert down.exit_code == 1 and down.not_run() == [2, 3]
    assert "hourly NOT RUN on 2 of 4 partitions: 2 (http://b:1), 3 (http://b:1)" in text
    assert "http://b:1: FAILED no worker answers" in text

    # a worker that has since taken over the other's partitions ran them: done
    moved = JobOutcome("hourly", 4, [Reply(A, report(0, 1, 2, 3)),
                                     Reply(B, error=WorkerCallError("gone"))])
    assert moved.not_run() == [] and moved.exit_code == 1       # (still: a member failed)

    revoked = JobOutcome("hourly", 4, [Reply(A, report(0, 1, aborted=(1,))),
                                       Reply(B, report(2, 3))])
    assert revoked.not_run() == [1] and revoked.exit_code == 1

    failed = JobOutcome("daily", 4, [Reply(A, report(0, 1, error="OSError: disk full")),
                                     Reply(B, report(2, 3))])
    assert failed.not_run() == [0, 1] and failed.exit_code == 1

    drift = JobOutcome("weekly", 4, [Reply(A, report(0, 1, drift=2)), Reply(B, report(2, 3))])
    assert drift.exit_code == 2 and drift.lines()[-1][0].endswith("drift 2 users")

    nobody = JobOutcome("hourly", 4, [Reply(Member("http://a:1", (0, 1, 2), 3),
                                            report(0, 1, 2))])
    assert nobody.not_run() == [3] and "3 (no owner)" in nobody.lines()[-1][0]
