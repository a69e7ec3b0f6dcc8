"""`profiles up` (what `make run` runs): broker + topics + worker healthy; Ctrl-C (SIGINT) stops
every process it started."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deploy.broker import free_port
from tests.harness import http_json

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _own_broker_config(tmp_path: Path) -> tuple[Path, int]:
    """A config whose embedded broker and worker use free ports (started by the command)."""
    broker_port, web_port = free_port(), free_port()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "kafka": {"broker": f"kafka://127.0.0.1:{broker_port}", "partitions": 2},
        "embedded_broker": {"port": broker_port, "run_dir": str(tmp_path / "run")},
        "worker": {"data_dir": str(tmp_path / "data"), "web_port": web_port}}))
    return cfg, web_port


def test_up_then_ctrl_c_leaves_nothing_behind(tmp_path):
    cfg, web_port = _own_broker_config(tmp_path)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    # Ctrl-C in a terminal reaches `up` with SIGINT at its default; a test run started in the
    # background of a non-interactive shell ignores SIGINT, and an ignored signal is inherited
    # (the cause of this test's two failures in CI runs started with `&`)
    proc = subprocess.Popen([sys.executable, "-m", "deploy", "--config", str(cfg), "up"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_sigint_default)
    try:
        deadline = time.monotonic() + 120
        body = {}
        while time.monotonic() < deadline:
            try:
                status, body = http_json(f"http://127.0.0.1:{web_port}/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        assert body.get("status") == "ok", body
        broker_pid = json.loads((run_dir / "broker.pid").read_text())["pid"]
        worker_pid = int((run_dir / "worker-1.pid").read_text())
        assert _alive(broker_pid) and _alive(worker_pid)

        seen_ok = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # seen once in a full suite run, not reproduced alone: keep what `up` was doing
            proc.send_signal(signal.SIGUSR1)        # its threads' stacks (faulthandler)
            time.sleep(1)
            proc.kill()
            out, _ = proc.communicate()
            worker_log = (run_dir / "worker-1.log").read_text()[-3000:]
            pytest.fail(f"`up` still running 60 s after SIGINT (health ok seen "
                        f"{seen_ok - started:.1f} s after start)\n--- up:\n{out}\n"
                        f"--- worker log, end:\n{worker_log}")
        assert proc.returncode == 0, out
        assert "worker 1 stopped" in out and "embedded broker stopped" in out
        assert not _alive(worker_pid) and not _alive(broker_pid)
        assert not (run_dir / "broker.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), "down"],
                       cwd=ROOT, capture_output=True)


def test_each_demo_replays_a_sample_from_a_fresh_broker_and_empty_worker_state(tmp_path):
    """`make demo` is `profiles demo --exit`: it exits 0 once the replay matched the batch path,
    shows profiles and stops its broker. The embedded broker keeps its data on disk, but each
    `make run` replays a sample and checks it against the batch path: a second run, with
    another sample, starts from empty log dirs and worker state, and matches exactly."""
    cfg, _ = _own_broker_config(tmp_path)
    runs = []
    for users in (40, 30):
        r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), "demo",
                            "--exit", "--users", str(users)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        runs.append(r)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0 mismatched, 0 missing" in r.stdout and "interest tags (106)" in r.stdout
        assert "embedded broker stopped" in r.stdout
        assert not (tmp_path / "run" / "broker.pid").exists()
    assert "log dirs cleared, and the worker state of an earlier run (instance-1)" in \
        runs[1].stdout
    m = re.search(r"stream vs batch path: (\d+) users: (\d+) match, 0 mismatched, 0 missing, "
                  r"0 unexpected", runs[1].stdout)
    assert m and m.group(1) == m.group(2), runs[1].stdout
    assert (tmp_path / "mapping_index.json").exists()     # the mapping index is kept
