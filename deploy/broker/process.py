"""The embedded broker's process: one Apache Kafka node per run directory.

Under the run dir: `broker.pid` (pid, ports, version), `broker.log` (the JVM's output) and
`broker/` (server.properties, log4j2.properties, and `data/`, the log dirs). `start` formats the
storage only when `data/` holds none, so a restart after a crash or a stop keeps every topic,
record and committed offset. `start` is idempotent; `stop` and `kill` end only the process the
pid file names, and only while that pid is still this run dir's broker.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.broker.distribution import Distribution, checked_java, installed_distribution
from deploy.broker.errors import BrokerError
from deploy.broker.ports import free_port, port_is_free
from deploy.broker.properties import (
    JVM_OPTIONS,
    LOG4J2,
    NODE_ID,
    new_cluster_id,
    server_properties,
)
from deploy.broker.warm_start import (
    archive_options,
    archive_path,
    ensure_template,
    format_from_template,
)

STOP_GRACE = 30.0     # seconds a stop waits for a controlled shutdown before SIGKILL


@dataclass(frozen=True)
class BrokerFiles:
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "broker.log"

    @property
    def home(self) -> Path:
        return self.run_dir / "broker"

    @property
    def server_properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j2(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def cluster_id(self) -> str | None:
        """The cluster id the storage was formatted with (None: not formatted)."""
        try:
            text = (self.data_dir / "meta.properties").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    port: int | None
    log_file: Path
    controller_port: int | None = None
    data_dir: Path | None = None
    version: str | None = None
    cluster_id: str | None = None

    def describe(self, verb: str = "running") -> str:
        if not self.running:
            return "embedded broker: not running"
        return (f"embedded broker: Apache Kafka {self.version} {verb} (pid {self.pid}) on "
                f"127.0.0.1:{self.port}, controller 127.0.0.1:{self.controller_port}; "
                f"cluster {self.cluster_id}, data {self.data_dir}; log {self.log_file}")


def _read_pidfile(pid_file: Path) -> dict | None:
    try:
        data = json.loads(pid_file.read_text())
        int(data["pid"]), int(data["port"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_our_broker(pid: int, files: BrokerFiles) -> bool:
    """The pid is alive and still this run dir's Kafka (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        os.kill(pid, 0)
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and str(files.server_properties).encode() in cmdline


def status(run_dir: Path) -> BrokerStatus:
    files = BrokerFiles(run_dir)
    rec = _read_pidfile(files.pid_file)
    if rec and _is_our_broker(int(rec["pid"]), files):
        return BrokerStatus(True, int(rec["pid"]), int(rec["port"]), files.log_file,
                            rec.get("controller_port"), files.data_dir, rec.get("version"),
                            files.cluster_id())
    return BrokerStatus(False, None, None, files.log_file)


async def _cluster_answers(bootstrap: str) -> bool:
    """A Metadata request answered with this node among the cluster's brokers."""
    from aiokafka import AIOKafkaClient
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


def wait_until_ready(port: int, timeout: float, proc: subprocess.Popen | None = None,
                     log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the broker exited at start-up with code {proc.returncode}"
                              + _log_tail(log_file))
        # connect first: a metadata request to a closed port makes aiokafka log an error
        if not port_is_free(port) and asyncio.run(_cluster_answers(f"127.0.0.1:{port}")):
            return
        time.sleep(0.1)
    raise BrokerError(f"the broker did not answer a metadata request on 127.0.0.1:{port} "
                      f"within {timeout:.0f} s" + _log_tail(log_file))


def _log_tail(log_file: Path | None, lines: int = 12) -> str:
    if log_file is None:
        return ""
    try:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (f"; the end of {log_file}:\n" + "\n".join(tail)) if tail else ""


def _controller_port(files: BrokerFiles, port: int) -> int:
    """The controller port of the last start when it is free again (a restart keeps it),
    else a new free one."""
    try:
        for line in files.server_properties.read_text().splitlines():
            if line.startswith("controller.quorum.voters="):
                old = int(line.rsplit(":", 1)[1])
                if old != port and port_is_free(old):
                    return old
    except (OSError, ValueError):
        pass
    while True:
        candidate = free_port()
        if candidate != port:
            return candidate


def format_storage(java: str, dist: Distribution, files: BrokerFiles,
                   cluster_id: str | None = None) -> None:
    """A new cluster in `files.data_dir` (a random id unless given)."""
    cluster_id = cluster_id or new_cluster_id()
    proc = subprocess.run(
        [java, *JVM_OPTIONS, f"-Dlog4j2.configurationFile={files.log4j2}", "-cp",
         dist.classpath, "kafka.tools.StorageTool", "format",
         # one argument: an id may start with "-" (a sixty-fourth of them), which the tool's
         # argument parser would take for an option (a make chaos run failed so)
         f"--cluster-id={cluster_id}", "--config", str(files.server_properties)],
        capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip()[-800:]
        raise BrokerError(f"formatting the broker's storage in {files.data_dir} failed "
                          f"(exit {proc.returncode}): {said}")


def new_storage(java: str, dist: Distribution, files: BrokerFiles) -> None:
    """A new cluster in `files.data_dir`: the storage tool's template with new ids
    (deploy.broker.warm_start), the tool run once per distribution."""
    def tool(work: Path) -> Path:
        scratch = BrokerFiles(work)
        scratch.home.mkdir(parents=True)
        scratch.server_properties.write_text(server_properties(9092, 9093, scratch.data_dir))
        scratch.log4j2.write_text(LOG4J2)
        format_storage(java, dist, scratch)
        return scratch.data_dir / "bootstrap.checkpoint"
    format_from_template(ensure_template(dist, tool), files.data_dir, new_cluster_id(), NODE_ID)


def start(run_dir: Path, port: int, timeout: float = 60.0,
          advertised_port: int | None = None,
          jvm_options: tuple[str, ...] | None = None) -> tuple[BrokerStatus, bool]:
    """Start the broker unless this run dir's broker runs already. Returns (status, started).
    `advertised_port`: the port clients are told to connect to (a proxy in front of it, as in
    the chaos run); the broker's own by default. `jvm_options`: instead of the class archive's
    (making one)."""
    current = status(run_dir)
    if current.running:
        return current, False
    java = checked_java()
    dist = installed_distribution()
    if not port_is_free(port):
        raise BrokerError(f"port {port} on 127.0.0.1 is busy: another process listens there "
                          "(choose another with --port or embedded_broker.port)")
    files = BrokerFiles(run_dir)
    files.home.mkdir(parents=True, exist_ok=True)
    controller_port = _controller_port(files, port)
    files.server_properties.write_text(
        server_properties(port, controller_port, files.data_dir, advertised_port))
    files.log4j2.write_text(LOG4J2)
    if files.cluster_id() is None:
        new_storage(java, dist, files)
    extra = archive_options(dist) if jvm_options is None else jvm_options
    with open(files.log_file, "ab") as log:
        proc = subprocess.Popen(
            [java, *JVM_OPTIONS, *extra, f"-Dlog4j2.configurationFile={files.log4j2}",
             f"-Dkafka.logs.dir={files.home / 'logs'}", "-cp", dist.classpath, "kafka.Kafka",
             str(files.server_properties)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C in a terminal is handled by our own stop()
    files.pid_file.write_text(json.dumps({"pid": proc.pid, "port": port,
                                          "controller_port": controller_port,
                                          "version": dist.version}))
    try:
        wait_until_ready(port, timeout, proc, files.log_file)
    except BrokerError:
        _terminate(proc.pid, grace=5.0)
        files.pid_file.unlink(missing_ok=True)
        raise
    return BrokerStatus(True, proc.pid, port, files.log_file, controller_port, files.data_dir,
                        dist.version, files.cluster_id()), True


def make_class_archive(dist: Distribution, timeout: float = 120.0) -> Path | None:
    """The class archive (deploy.broker.warm_start), made by a broker that starts, answers and
    stops in a scratch folder (the JVM writes the archive as it exits). None when that JVM
    wrote none: starts then go without one."""
    done = archive_path(dist)
    if done.is_file():
        return done
    partial = done.with_name(f".{done.name}-{os.getpid()}")
    partial.unlink(missing_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".archive-run-", dir=dist.home))
    try:
        start(scratch, free_port(), timeout, jvm_options=(f"-XX:ArchiveClassesAtExit={partial}",))
        stop(scratch)
        if not partial.is_file():
            return None
        partial.rename(done)
        return done
    finally:
        partial.unlink(missing_ok=True)
        stop(scratch, grace=5.0)
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:  # not our child: poll for its exit
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _terminate(pid: int, grace: float = STOP_GRACE) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, grace):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, 10.0)


def stop(run_dir: Path, grace: float = STOP_GRACE) -> bool:
    """Stop the broker this run dir started (a controlled shutdown; SIGKILL after `grace` s).
    False when none was running. The data stays for the next start."""
    files = BrokerFiles(run_dir)
    current = status(run_dir)
    if not current.running or current.pid is None:
        files.pid_file.unlink(missing_ok=True)
        return False
    _terminate(current.pid, grace)
    files.pid_file.unlink(missing_ok=True)
    return True


def kill(run_dir: Path) -> int | None:
    """SIGKILL this run dir's broker, as a crash would (the chaos run, tests). Its pid, or None
    when none was running. The pid file stays: the next `start` finds the pid gone."""
    current = status(run_dir)
    if not current.running or current.pid is None:
        return None
    os.kill(current.pid, signal.SIGKILL)
    _wait_gone(current.pid, 10.0)
    return current.pid


def wipe(run_dir: Path) -> None:
    """Delete a stopped broker's data: the next start formats a new cluster (new cluster id)."""
    if status(run_dir).running:
        raise BrokerError("the broker is running: stop it before wiping its data")
    shutil.rmtree(BrokerFiles(run_dir).data_dir, ignore_errors=True)
