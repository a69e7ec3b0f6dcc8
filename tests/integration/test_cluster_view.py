"""One cluster view (issue 16), against workers started by hand (`profiles worker --instance-id N`,
no up/deploy), with `worker.auth: all`: the CLI finds every member through one worker, wherever
it listens (also through that worker alone, when the members' advertised addresses cannot be
reached from the CLI); a job runs on every member, or fails naming the partitions it did not
run; every read but /health and /metrics needs the token, also when routed between workers."""
from __future__ import annotations

import json
import re
import signal
import urllib.request

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from deploy.cluster import discover
from deploy.cluster_jobs import run_job
from deploy.worker_process import worker_argv
from features.config import load_config
from streams.web.auth import api_token
from streams.web.cluster import Membership
from tests.harness import (
    http_json,
    latest_values,
    profile_worker,
    profiles_cli,
    two_free_ports,
    wait_delivered,
    wait_for,
    write_config,
)
from tests.integration.test_scheduled_jobs import append_events, clock_events
from tools.data.sample import END_TS, SampleSpec, write_sample
from tools.verify import compare

pytestmark = pytest.mark.integration
DAY = 86400
P = 6                                   # partitions


def by_hand(workers, cfg_path, instance_id: int, web_port: int):
    """`profiles worker --instance-id N`, its web port from the config (web_port + N - 1)."""
    return workers(worker_argv(cfg_path, instance_id), web_port, f"w{instance_id}")


def events_in(ws, token: str) -> int:
    return sum(http_json(w.url("/stats"), token=token)[1]["counts"].get("events_in", 0)
               for w in ws)


def settled(w, token: str, members: int) -> Membership | None:
    """The group as `w` sees it once it has `members` members owning every partition."""
    status, body = http_json(w.url("/cluster"), token=token)
    view = Membership.from_dict(body) if status == 200 else None
    if view and len(view.members) == members and not view.rebalancing and \
            not view.unassigned() and all(m.partitions for m in view.members):
        return view
    return None


def partition(uid: int) -> int:
    return DefaultPartitioner()(str(uid).encode(), list(range(P)), list(range(P)))


def worker_lines(stdout: str) -> dict[str, str]:
    """`profiles status` lines per worker URL."""
    return {m.group(1): line for line in stdout.splitlines()
            if (m := re.match(r"worker \S+\s+(http://\S+)", line))}


def test_workers_started_by_hand_are_found_and_every_read_needs_the_token(broker, workers,
                                                                          tmp_path):
    port = two_free_ports()
    # Workers advertise "localhost"; the CLI's configured address is 127.0.0.1. A proxy that
    # refuses everything but 127.0.0.1 then makes every advertised address unreachable from
    # the CLI while the workers still reach each other (as a port-forward to one pod does).
    # 6 partitions: Faust's sticky assignor gives a third worker some only when the first two
    # hold more than ceil(partitions / 3) each
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": P},
                            worker={"data_dir": str(tmp_path / "data"), "web_port": port,
                                    "advertised_host": "localhost", "auth": "all"})
    cfg = load_config(cfg_path, env={})
    token = api_token(cfg)              # the token file every worker and the CLI read
    sample = tmp_path / "sample"
    write_sample(SampleSpec(users=240, days=40, activity=0.5, seed=5), sample)
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    w = [by_hand(workers, cfg_path, 1, port).start(), by_hand(workers, cfg_path, 2, port + 1)
         .start()]
    for x in w:
        x.wait_healthy()
    n, _ = produce_events(cfg, sample / "events.jsonl", progress=None)
    assert wait_for(lambda: events_in(w, token) >= n, 120, what="events processed")
    assert wait_for(lambda: settled(w[0], token, 2), 30, what="two members")

    # 4. worker.auth: all -- reads need the token, also when routed to the other worker
    owned_by_1 = {int(tp.split(":")[1]) for tp in http_json(w[0].url("/health"))[1]
                  ["assigned_partitions"] if tp.startswith("user-events:")}
    wait_delivered(cfg, w, token=token)    # every profile record the two made is in the topic
    users = [int(k) for k in latest_values(cfg, cfg.kafka.topics.profile_updates)]
    mine = next(u for u in users if partition(u) in owned_by_1)
    routed = next(u for u in users if partition(u) not in owned_by_1)
    for uid in (mine, routed):
        assert http_json(w[0].url(f"/profiles/{uid}"))[0] == 401
        status, body = http_json(w[0].url(f"/profiles/{uid}"), token=token)
        assert status == 200 and body["user_id"] == uid, (status, body)
    status, body = http_json(w[0].url(f"/profiles?ids={mine},{routed}"), token=token)
    assert status == 200 and body["missing"] == [], body
    assert http_json(w[0].url(f"/profiles?ids={mine},{routed}"))[0] == 401
    for path in ("/cluster", "/monitor", "/stats", "/jobs", "/backups", "/dashboard/data"):
        assert http_json(w[1].url(path))[0] == 401, path
    assert http_json(w[1].url("/health"))[0] == 200
    relay = "/cluster/relay?to=http://127.0.0.1:1&path=/health"     # members only
    assert http_json(w[0].url(relay), token=token)[0] == 404
    with urllib.request.urlopen(w[1].url("/metrics"), timeout=5) as r:
        assert r.status == 200 and b"profiles_events_in_total" in r.read()
    r = profiles_cli(cfg_path, "query", str(routed))
    assert r.returncode == 0 and json.loads(r.stdout)["user_id"] == routed
    r = profiles_cli(cfg_path, "status", env={"PROFILES_API_TOKEN": "not-the-token"})
    assert "refused the token (HTTP 401)" in r.stdout and "PROFILES_API_TOKEN" in r.stdout

    # stream time moves to T in every partition; the users under test stay quiet
    T = END_TS + 9 * DAY + 3600
    clock = clock_events(cfg, T, item_id=1)
    (tmp_path / "clock.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in clock))
    produce_events(cfg, tmp_path / "clock.jsonl", progress=None)
    assert wait_for(lambda: events_in(w, token) >= n + len(clock), 60, what="clock processed")

    # 1. status and job, asked of nothing but the configured address
    r = profiles_cli(cfg_path, "status")
    lines = worker_lines(r.stdout)
    assert r.returncode == 0 and "2 of 2 workers answering" in r.stdout, r.stdout
    assert f"{P} of {P} partitions assigned" in r.stdout
    assert set(lines) == {f"http://localhost:{port}", f"http://localhost:{port + 1}"}
    listed = [int(p) for line in lines.values()
              for p in re.search(r"partitions (\S+)", line).group(1).split(",")]
    assert sorted(listed) == list(range(P))
    assert profiles_cli(cfg_path, "health").returncode == 0
    r = profiles_cli(cfg_path, "job", "hourly")
    assert r.returncode == 0, r.stderr
    reports = [json.loads(line[line.index("{"):]) for line in r.stdout.splitlines()
               if line.startswith("http://")]
    assert len(reports) == 2 and all(rep["published"] > 0 for rep in reports), r.stdout
    everything = append_events(sample / "events.jsonl", clock, tmp_path / "all.jsonl")
    r = profiles_cli(cfg_path, "batch", "--items", str(sample / "item_feat_dict.json"),
                     "--events", str(everything), "--out", str(tmp_path / "batch.jsonl"),
                     "--as-of", str(T), "--quiet")
    assert r.returncode == 0
    expected = {rec["user_id"]: rec for rec in map(orjson.loads, (tmp_path / "batch.jsonl")
                                                   .read_bytes().splitlines())}
    wait_delivered(cfg, w, token=token)
    latest = {int(k): v for k, v in latest_values(cfg, cfg.kafka.topics.profile_updates)
              .items()}
    c = compare(latest, expected)       # (the clock users are in both)
    print(f"after `profiles job hourly` at stream time {T}: {c.summary()}")
    assert c.ok and c.users > 200, (c.summary(), c.mismatched[:2], c.missing[:5])

    # ... and through the first worker alone when the advertised addresses are out of reach
    dead_proxy = {"http_proxy": f"http://127.0.0.1:{free_port()}", "no_proxy": "127.0.0.1"}
    r = profiles_cli(cfg_path, "status", env=dead_proxy)
    assert r.returncode == 0 and "2 of 2 workers answering" in r.stdout, r.stdout

    # 3. a third worker whose web port does not follow web_port + N - 1
    odd = free_port()
    assert odd not in (port, port + 1, port + 2)
    w.append(profile_worker(workers, cfg_path, 3, odd, "w3").start())
    w[2].wait_healthy()
    view = wait_for(lambda: settled(w[0], token, 3), 60, what="three members")
    assert view, http_json(w[0].url("/cluster"), token=token)
    r = profiles_cli(cfg_path, "status")
    lines = worker_lines(r.stdout)
    assert "3 of 3 workers answering" in r.stdout and f"{P} of {P} partitions" in r.stdout
    assert lines[f"http://localhost:{odd}"].startswith("worker 3 ")
    assert profiles_cli(cfg_path, "job", "daily").returncode == 0
    r = profiles_cli(cfg_path, "backup", "list")
    assert r.returncode == 0
    assert {re.match(r"instance (\d+)  (\S+)", line).groups() for line in r.stdout.splitlines()} \
        == {("1", f"http://localhost:{port}"), ("2", f"http://localhost:{port + 1}"),
            ("3", f"http://localhost:{odd}")}

    # a rolling restart of a worker nobody supervises: it restarts in place, the group whole
    before = http_json(w[2].url("/health"))[1]["started_at"]
    r = profiles_cli(cfg_path, "restart", "--instance-id", "3")
    assert r.returncode == 0 and "worker 3 restarted and healthy" in r.stdout, r.stderr
    assert w[2].proc.poll() is None                 # the same process
    assert http_json(w[2].url("/health"))[1]["started_at"] > before
    # the restarted worker answers healthy once it has its assignment; the others finish the
    # same rebalance a few milliseconds later (a CI run read worker 1 in between)
    assert wait_for(lambda: settled(w[0], token, 3), 30, what="three members again")

    # 2. a member stopped between discovery and the call: the job names what it did not run
    cluster = discover(cfg, [w[0].url("")], token)
    victim = cluster.view.member(f"http://localhost:{odd}")
    assert victim and victim.partitions and len(cluster.members) == 3
    w[2].kill(signal.SIGKILL)
    outcome = run_job(cluster, "hourly")
    out = "\n".join(line for line, _ in outcome.lines())
    print(out)
    assert outcome.exit_code == 1
    assert outcome.not_run() == list(victim.partitions)
    assert outcome.ran() == set(range(P)) - set(victim.partitions)
    assert f"hourly NOT RUN on {len(victim.partitions)} of {P} partitions: " in out
    assert all(f"{p} (http://localhost:{odd})" in out for p in victim.partitions)
    assert f"http://localhost:{odd}: FAILED no worker answers" in out
