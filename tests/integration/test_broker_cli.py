"""`profiles broker start|stop|status`: idempotent start, the status an operator needs (version,
pid, ports, data dir), data kept across a stop, stop of our own process only, and one clear
sentence for a busy port, a missing or old Java, and missing jars without Maven."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.broker import distribution, free_port

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


def test_start_twice_status_stop_and_start_again_from_disk(cfg, tmp_path):
    port = yaml.safe_load(cfg.read_text())["embedded_broker"]["port"]
    version = distribution().version
    first = profiles(cfg, "broker", "start")
    assert first.returncode == 0 and f"Apache Kafka {version} started (pid" in first.stdout, \
        first.stderr
    pid = int(first.stdout.split("pid ")[1].split(")")[0])
    second = profiles(cfg, "broker", "start")
    assert second.returncode == 0 and f"already running (pid {pid})" in second.stdout
    st = profiles(cfg, "broker", "status")
    data = tmp_path / "run" / "broker" / "data"
    assert st.returncode == 0 and f"Apache Kafka {version} running (pid {pid})" in st.stdout
    assert f"127.0.0.1:{port}, controller 127.0.0.1:" in st.stdout and str(data) in st.stdout
    cluster = st.stdout.split("cluster ")[1].split(",")[0]
    assert (data / "meta.properties").read_text().count(f"cluster.id={cluster}") == 1
    assert (tmp_path / "run" / "broker.log").stat().st_size > 0
    stop = profiles(cfg, "broker", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    proc = Path(f"/proc/{pid}")
    assert not proc.exists() or b"zombie" in (proc / "status").read_bytes().lower()
    st2 = profiles(cfg, "broker", "status")
    assert st2.returncode == 3 and "not running" in st2.stdout
    again = profiles(cfg, "broker", "stop")
    assert again.returncode == 0 and "not running" in again.stdout
    restarted = profiles(cfg, "broker", "start")          # the same cluster, from its log dirs
    assert restarted.returncode == 0 and f"cluster {cluster}," in restarted.stdout


def test_busy_port_is_one_clear_sentence(cfg):
    port = yaml.safe_load(cfg.read_text())["embedded_broker"]["port"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = profiles(cfg, "broker", "start")
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is busy" in r.stderr and "Traceback" not in r.stderr


def _path_with(tmp_path: Path, **scripts: str) -> str:
    """A PATH holding only the given fake commands (name -> shell script body)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def test_no_java_is_one_clear_sentence(cfg, tmp_path):
    r = profiles(cfg, "broker", "start", env={"PATH": _path_with(tmp_path), "JAVA_HOME": ""})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "needs Java 17 or newer and none was found: install a JDK 17+" in r.stderr


def test_an_old_java_is_one_clear_sentence(cfg, tmp_path):
    path = _path_with(tmp_path, java='echo \'openjdk version "11.0.22" 2024-01-16\' >&2')
    r = profiles(cfg, "broker", "start", env={"PATH": path, "JAVA_HOME": ""})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "is Java 11; Apache Kafka 4 needs Java 17 or newer: install a JDK 17+" in r.stderr


def test_missing_jars_without_maven_is_one_clear_sentence(cfg, tmp_path):
    java = shutil.which("java")
    assert java, "the machine has a JDK (make install checks it)"
    env = {"PATH": _path_with(tmp_path, java=f'exec {java} "$@"'), "JAVA_HOME": "",
           "PROFILES_KAFKA_HOME": str(tmp_path / "no-kafka-here")}
    r = profiles(cfg, "broker", "start", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "fetching them needs Maven: install it" in r.stderr


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


def test_a_cluster_id_that_starts_with_a_dash_is_formatted(tmp_path):
    """URL-safe base64 ids start with "-" one time in 64; the storage tool once took one for an
    option and the broker did not start (a make chaos run)."""
    from deploy.broker import BrokerFiles, checked_java
    from deploy.broker.distribution import installed_distribution
    from deploy.broker.process import format_storage
    from deploy.broker.properties import LOG4J2, server_properties
    files = BrokerFiles(tmp_path / "run")
    files.home.mkdir(parents=True)
    files.server_properties.write_text(server_properties(free_port(), free_port(),
                                                         files.data_dir))
    files.log4j2.write_text(LOG4J2)
    format_storage(checked_java(), installed_distribution(), files, "-QbJ5uYfRFuwbw2E0sF9Og")
    assert files.cluster_id() == "-QbJ5uYfRFuwbw2E0sF9Og"


def test_a_new_cluster_from_the_template_is_what_the_storage_tool_writes(tmp_path):
    """A fresh start copies the storage tool's bootstrap checkpoint and writes meta.properties
    itself (deploy.broker.warm_start): the same keys as the tool's, ids of its own, and a broker
    that starts on it with the cluster id given, one starting with "-" too."""
    from deploy.broker import BrokerFiles, checked_java, start, status, stop, warm_start
    from deploy.broker.distribution import installed_distribution
    from deploy.broker.process import format_storage
    from deploy.broker.properties import LOG4J2, NODE_ID, server_properties
    dist = installed_distribution()
    tool = BrokerFiles(tmp_path / "tool")
    tool.home.mkdir(parents=True)
    tool.server_properties.write_text(server_properties(free_port(), free_port(), tool.data_dir))
    tool.log4j2.write_text(LOG4J2)
    format_storage(checked_java(), dist, tool, "-QbJ5uYfRFuwbw2E0sF9Og")
    ours = BrokerFiles(tmp_path / "ours")
    template = warm_start.ensure_template(
        dist, lambda work: tool.data_dir / warm_start.CHECKPOINT)
    warm_start.format_from_template(template, ours.data_dir, "-QbJ5uYfRFuwbw2E0sF9Og", NODE_ID)

    def props(files):
        lines = (files.data_dir / "meta.properties").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    theirs, mine = props(tool), props(ours)
    assert set(mine) == set(theirs) and mine.pop("directory.id") != theirs.pop("directory.id")
    assert mine == theirs
    assert len((ours.data_dir / warm_start.CHECKPOINT).read_bytes()) == \
        len((tool.data_dir / warm_start.CHECKPOINT).read_bytes())
    st, started = start(ours.run_dir, free_port())
    try:
        assert started and st.cluster_id == "-QbJ5uYfRFuwbw2E0sF9Og"
        assert status(ours.run_dir).running
    finally:
        stop(ours.run_dir)
