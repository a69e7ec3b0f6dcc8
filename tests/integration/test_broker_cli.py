"""`profiles broker start|stop|status`: idempotent start, stop of our own process only, and one
clear sentence for a busy port or a missing binary."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.broker import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def profiles(cfg: Path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def cfg(tmp_path):
    port = free_port()
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"kafka": {"broker": f"127.0.0.1:{port}"},
                                 "embedded_broker": {"port": port,
                                                     "run_dir": str(tmp_path / "run")}}))
    yield p
    profiles(p, "broker", "stop")


def test_start_twice_status_stop(cfg):
    first = profiles(cfg, "broker", "start")
    assert first.returncode == 0 and "started (pid" in first.stdout, first.stderr
    pid = int(first.stdout.split("pid ")[1].split(")")[0])
    second = profiles(cfg, "broker", "start")
    assert second.returncode == 0 and f"already running (pid {pid})" in second.stdout
    st = profiles(cfg, "broker", "status")
    assert st.returncode == 0 and f"running (pid {pid})" in st.stdout
    stop = profiles(cfg, "broker", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    proc = Path(f"/proc/{pid}")
    assert not proc.exists() or b"zombie" in (proc / "status").read_bytes().lower()
    st2 = profiles(cfg, "broker", "status")
    assert st2.returncode == 3 and "not running" in st2.stdout
    again = profiles(cfg, "broker", "stop")
    assert again.returncode == 0 and "not running" in again.stdout


def test_busy_port_is_one_clear_sentence(cfg):
    port = yaml.safe_load(cfg.read_text())["embedded_broker"]["port"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = profiles(cfg, "broker", "start")
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is busy" in r.stderr and "Traceback" not in r.stderr


def test_missing_binary_is_one_clear_sentence(cfg, tmp_path):
    r = profiles(cfg, "broker", "start", env={"PROFILES_BROKER_BIN": str(tmp_path / "nope")})
    assert r.returncode == 1
    assert "is not an executable file" in r.stderr and "Traceback" not in r.stderr


def test_stop_leaves_other_processes_alone(cfg, tmp_path):
    """A stale pid file naming somebody else's process must not get that process killed."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir(exist_ok=True)
        (run / "broker.pid").write_text(f'{{"pid": {other.pid}, "port": 1}}')
        r = profiles(cfg, "broker", "stop")
        assert r.returncode == 0 and "not running" in r.stdout
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
