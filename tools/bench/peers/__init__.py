"""The peers `make bench` runs beside our workers, on the same broker and input: quixstreams, the
nearest Python peer, and Kafka Streams, the JVM reference. Each does a per-user state update of
one shape: per-day counts per action (codes 0..3) over the user's last 30 days and a dwell sum,
in a RocksDB store with a changelog topic, and a record out per event that changed it; a value
that is not such an event is dropped. That is less than our workers do per event (the features,
the windows, the dead letters): the rows say what a team would get from each before writing
any features.

Every row is timed the same way (`committed.time_group`): from the process start until its
consumer group has committed every partition's end, with the start-up apart.

- `quix_peer.py`: the quixstreams app; it runs in a virtualenv of its own (`quix_venv`), since
  quixstreams pins pydantic and confluent-kafka versions ours do not share.
- `kstreams/`: the Kafka Streams app (Java), built by Maven (`kstreams_build`).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from deploy.broker.distribution import DEPENDENCY_PLUGIN, checked_java

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
BUILD = ROOT / "build" / "peers"
QUIX_VERSION = "3.28.1"
KSTREAMS_POM = HERE / "kstreams" / "pom.xml"
KSTREAMS_MAIN = "profiles.bench.PeerApp"


class PeerBuildError(RuntimeError):
    """A peer could not be installed or built: the message says what to do."""


def _run(cmd: list[str], what: str, timeout: float = 900) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PeerBuildError(f"{what} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise PeerBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def quix_venv(say: Callable[[str], None] = print) -> Path:
    """The python of a virtualenv with quixstreams QUIX_VERSION (made once, under build/)."""
    venv = BUILD / f"quixstreams-{QUIX_VERSION}"
    python = venv / "bin" / "python"
    done = venv / ".complete"
    if done.is_file():
        return python
    say(f"installing quixstreams {QUIX_VERSION} into {venv} (once) ...")
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)], "creating the quixstreams virtualenv")
    _run([str(python), "-m", "pip", "install", "--quiet", f"quixstreams=={QUIX_VERSION}"],
         f"pip install quixstreams=={QUIX_VERSION}")
    done.write_text(QUIX_VERSION + "\n")
    return python


def quix_command(bootstrap: str, in_topic: str, out_topic: str, group: str, state_dir: Path,
                 guarantee: str = "at-least-once", say: Callable[[str], None] = print
                 ) -> list[str]:
    return [str(quix_venv(say)), str(HERE / "quix_peer.py"), bootstrap, in_topic, out_topic,
            group, str(state_dir), guarantee]


def kstreams_build(say: Callable[[str], None] = print) -> Path:
    """Build the Kafka Streams app with Maven (once); the folder of its classes and jars."""
    out = BUILD / "kstreams"
    done = out / ".complete"
    if done.is_file() and done.stat().st_mtime >= max(
            p.stat().st_mtime for p in KSTREAMS_POM.parent.rglob("*") if p.is_file()):
        return out
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PeerBuildError("the Kafka Streams row is built by Maven: install it (Debian/"
                             "Ubuntu: apt-get install maven)")
    say(f"building the Kafka Streams peer with Maven into {out} ...")
    shutil.rmtree(out, ignore_errors=True)
    _run([mvn, "-B", "-q", "-f", str(KSTREAMS_POM), f"-Dpeer.build={out}", "compile",
          f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
          f"-DoutputDirectory={out / 'lib'}"], "building the Kafka Streams peer")
    done.write_text("built\n")
    return out


def kstreams_command(bootstrap: str, in_topic: str, out_topic: str, app_id: str,
                     state_dir: Path, guarantee: str = "at_least_once",
                     say: Callable[[str], None] = print) -> list[str]:
    out = kstreams_build(say)
    return [checked_java(), "-Xms256m", "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", f"{out / 'classes'}:{out / 'lib' / '*'}", KSTREAMS_MAIN, bootstrap, in_topic,
            out_topic, app_id, str(state_dir), guarantee]
