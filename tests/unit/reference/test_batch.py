"""The offline batch path from files: dead letters, TAAC-style input, --as-of, the CLI."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from features.config import parse_config
from offline.batch_io import dlq_path
from reference.batch import run_batch
from tools.data.sample import SampleSpec, write_sample

ROOT = Path(__file__).resolve().parents[3]
D0 = 20000 * 86400


def lines(*objs):
    return b"\n".join(o if isinstance(o, bytes) else orjson.dumps(o) for o in objs) + b"\n"


def test_batch_dead_letters_and_profiles(tmp_path):
    cfg = parse_config({"mapping_index": str(tmp_path / "i.json"),
                        "interest_tags": {"min_frequency": 1}}, env={})
    items = tmp_path / "items.jsonl"
    items.write_bytes(lines({"item_id": 1, "features": {"100": 1}}))
    ev = tmp_path / "events.jsonl"
    ev.write_bytes(lines(
        {"user_id": 1, "item_id": 1, "timestamp": D0, "action_type": 1, "event_id": "a"},
        {"user_id": 1, "item_id": 1, "timestamp": D0 + 5, "action_type": 1, "event_id": "a"},
        b"{oops",
        {"user_id": 1, "item_id": 1, "timestamp": D0 - 40 * 86400, "action_type": 1},
        {"user_id": 2, "item_id": 9, "timestamp": D0, "event_type": "purchase"},
        {"user_id": 3, "item_id": 9, "timestamp": D0, "action_type": 7}))
    out = tmp_path / "out" / "profiles.jsonl"
    report = run_batch(cfg, items, ev, out, progress_stream=None)
    assert report.summary()["rejected"] == {"malformed_json": 1, "too_late": 1,
                                            "unknown_action": 1}
    assert (report.events, report.applied, report.duplicates, report.users) == (6, 2, 1, 2)
    recs = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [r["user_id"] for r in recs] == [1, 2]
    assert recs[0]["interest_tags"] == ["entertainment"] and recs[0]["as_of"] == D0
    dlq = [orjson.loads(x) for x in dlq_path(out).read_bytes().splitlines()]
    assert [d["reason"] for d in dlq] == ["malformed_json", "too_late", "unknown_action"]
    assert dlq[0]["original"] == "{oops" and dlq[0]["line"] == 3


def test_taac_seq_lines_and_as_of(tmp_path):
    cfg = parse_config({"mapping_index": str(tmp_path / "i.json")}, env={})
    ev = tmp_path / "seq.jsonl"
    ev.write_bytes(lines([[7, None, {"1": 2}, None, None, D0],       # user-feature row
                          [7, 10, None, {"100": 1}, 1, D0 + 1],
                          [7, 11, None, {"100": 1}, 0, D0 + 2 * 86400]]))
    out = tmp_path / "p.jsonl"
    report = run_batch(cfg, None, ev, out, as_of=D0 + 100, progress_stream=None)
    assert (report.events, report.applied, report.after_as_of) == (2, 1, 1)
    rec = orjson.loads(out.read_bytes())
    assert rec["as_of"] == D0 + 100 and rec["user_id"] == 7


def test_cli_sample_then_batch(tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "deploy", *a], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
    s = run("sample", "--users", "50", "--days", "35", "--out", str(tmp_path / "s"))
    assert s.returncode == 0, s.stderr
    cfg = tmp_path / "profile_config.yaml"       # its mapping index then lands in tmp_path
    shutil.copy(ROOT / "profile_config.yaml", cfg)
    b = run("--config", str(cfg), "batch",
            "--items", str(tmp_path / "s" / "item_feat_dict.json"),
            "--events", str(tmp_path / "s" / "events.jsonl"), "--out", str(tmp_path / "o.jsonl"))
    assert b.returncode == 0, b.stderr
    summary = orjson.loads(b.stdout)
    assert summary["users"] == 50 and summary["applied"] > 1000
    assert summary["duplicates"] > 0 and summary["rejected"].get("too_late", 0) > 0
    assert "events/s" in b.stderr and "batch:" in b.stderr


def test_sample_is_deterministic(tmp_path):
    a = write_sample(SampleSpec(users=20, days=5, items=100), tmp_path / "a")
    b = write_sample(SampleSpec(users=20, days=5, items=100), tmp_path / "b")
    assert a["events"] == b["events"]
    assert (tmp_path / "a" / "events.jsonl").read_bytes() == \
        (tmp_path / "b" / "events.jsonl").read_bytes()
