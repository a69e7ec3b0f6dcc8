"""What `real_time_update.update_interval` trades: records per user and worker CPU against
freshness. One worker on the embedded broker per interval; the sample is produced at a steady
rate (a live stream: each user's events spread over the run), then the worker is left until
nothing is held. Prints records per user and the worker's CPU seconds (above what it burns
idle) for each interval.

    .venv/bin/python -m tools.bench.holdback [--users 1000] [--activity 1.0] [--rate 4000]
        [--intervals 0,2,10]

The hold-back (features/holdback.py, streams/pipeline/holdback.py) in the benchmark layer.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from deploy import broker as embedded
from deploy.clients import latest_by_key, load_items, produce_events, tail
from deploy.worker_process import WorkerProcess, worker_argv
from features.config import NO_SCHEDULED_RUNS, load_config
from tools.data.sample import SampleSpec, write_sample

IDLE_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def run(folder: Path, port: int, sample: Path, interval: float, rate: float) -> dict:
    tag = f"i{interval:g}".replace(".", "_")
    folder.mkdir(parents=True)
    cfg_path = folder / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": 4, "topics": {
            "user_events": f"{tag}-events", "profile_updates": f"{tag}-updates",
            "profile_aggregates": f"{tag}-aggregates", "dlq": f"{tag}-dlq",
            "alerts": f"{tag}-alerts"}},
        "worker": {"data_dir": str(folder / "data"), "app_id": f"bench-{tag}"},
        "real_time_update": {"update_interval": interval},
        "scheduled_update": dict(NO_SCHEDULED_RUNS)}))
    cfg = load_config(cfg_path, env={})
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    web = embedded.free_port()
    w = WorkerProcess(worker_argv(cfg_path, 1, web), folder / "worker.log", web).start()
    try:
        w.wait_healthy(120)
        time.sleep(2.0)
        # what the idle worker burns per second (Faust's timers, ours): taken off the run's CPU,
        # which lasts longer with a longer interval (the last held users wait it out)
        cpu0, t0 = cpu_seconds(w.proc.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(w.proc.pid) - cpu0) / (time.monotonic() - t0)
        cpu0, t0 = cpu_seconds(w.proc.pid), time.monotonic()
        n, _ = produce_events(cfg, sample / "events.jsonl", rate=rate, progress=None)
        while metric(w.url(), "profiles_events_in_total") < n or \
                metric(w.url(), "profiles_held_users") > 0:
            time.sleep(0.2)
        time.sleep(1.0)
        cpu = cpu_seconds(w.proc.pid) - cpu0 - idle_rate * (time.monotonic() - t0)
        records = tail(cfg, cfg.kafka.topics.profile_updates, from_beginning=True,
                       idle_timeout=3.0, out=io.StringIO())
        users = len(latest_by_key(cfg, cfg.kafka.topics.profile_updates))
    finally:
        w.stop()
    return {"interval": interval, "events": n, "users": users, "records": records, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--activity", type=float, default=1.0, help="SampleSpec.activity")
    ap.add_argument("--rate", type=float, default=4000)
    ap.add_argument("--intervals", default="0,2,10")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sample = root / "sample"
        write_sample(SampleSpec(users=args.users, activity=args.activity), sample)
        port = embedded.free_port()
        embedded.start(root / "broker", port, timeout=20)
        try:
            for i in (float(x) for x in args.intervals.split(",")):
                r = run(root / f"run-{i:g}", port, sample, i, args.rate)
                print(f"update_interval {r['interval']:g} s: {r['events']} events, "
                      f"{r['records']} records for {r['users']} users "
                      f"({r['records'] / max(r['users'], 1):.2f} per user), worker CPU above idle "
                      f"{r['cpu']:.1f} s", flush=True)
        finally:
            embedded.stop(root / "broker")


if __name__ == "__main__":
    main()
