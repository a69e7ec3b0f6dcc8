"""The Apache Kafka distribution the embedded broker runs: the jars of `pom.xml` (beside this
module) resolved once through Maven into a lib folder, and a Java 17+ to run them.

Maven is needed only for that first resolve; the folder is reused afterwards (`make install`
fills it, `profiles broker start` fills it when it is missing)."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, cast

from deploy.broker.errors import BrokerError

POM = Path(__file__).with_name("pom.xml")
# Maven 3.8's default dependency plugin predates copy-dependencies' options used here
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
HOME_ENV = "PROFILES_KAFKA_HOME"
COMPLETE = ".complete"            # written last: a resolve cut short is not taken for done


def kafka_version(pom: Path = POM) -> str:
    """The pinned Kafka version: the pom's `kafka.version` property."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} names no kafka.version")
    return cast(str, node.text).strip()


def default_home(version: str) -> Path:
    """$PROFILES_KAFKA_HOME, else build/kafka-<version> in the project's checkout (what
    `make clean` removes), else the user's cache for an installed package."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and os.access(root, os.W_OK):
        return root / "build" / f"kafka-{version}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "user-profiles" / f"kafka-{version}"


@dataclass(frozen=True)
class Distribution:
    version: str
    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        # one wildcard entry that java expands itself (never a shell glob: BROKER.md)
        return str(self.libs / "*")

    def installed(self) -> bool:
        return (self.libs / COMPLETE).is_file()


def java_executable() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError(f"the embedded Kafka broker needs Java {MIN_JAVA} or newer and none "
                          "was found: install a JDK 17+ (Debian/Ubuntu: apt-get install "
                          "openjdk-17-jre-headless) or set JAVA_HOME, or point kafka.broker at "
                          "a running Kafka cluster")
    return found


@functools.lru_cache(maxsize=8)
def java_major(java: str) -> int:
    """The major version `java -version` reports (8 for 1.8); asked once per executable and
    process (a JVM start each time: the tests start many brokers)."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BrokerError(f"{java} -version failed: {e}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise BrokerError(f"cannot tell the Java version from {java} -version: "
                          f"{(out.stderr or out.stdout).strip()[:200]!r}")
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def checked_java() -> str:
    """A java of version 17 or newer, or one sentence naming what to install."""
    java = java_executable()
    major = java_major(java)
    if major < MIN_JAVA:
        raise BrokerError(f"{java} is Java {major}; Apache Kafka 4 needs Java {MIN_JAVA} or "
                          "newer: install a JDK 17+ (Debian/Ubuntu: apt-get install "
                          "openjdk-17-jre-headless) and put it first on PATH or in JAVA_HOME")
    return java


def distribution(home: Path | None = None) -> Distribution:
    version = kafka_version()
    return Distribution(version, home or default_home(version))


def installed_distribution() -> Distribution:
    """The resolved distribution, resolving it first when it is missing."""
    dist = distribution()
    return dist if dist.installed() else resolve(dist)


def resolve(dist: Distribution | None = None, say: Callable[[str], None] = print) -> Distribution:
    """Copy the pom's runtime jars into `dist.libs` with Maven, unless they are there already.
    A failed resolve leaves nothing behind."""
    dist = dist or distribution()
    if dist.installed():
        return dist
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"the embedded broker's jars (Apache Kafka {dist.version}) are not in "
                          f"{dist.libs} and fetching them needs Maven: install it (Debian/Ubuntu: "
                          "apt-get install maven), or point kafka.broker at a running Kafka "
                          "cluster")
    say(f"resolving Apache Kafka {dist.version} through Maven into {dist.libs} ...")
    dist.home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=dist.home))
    try:
        proc = subprocess.run(
            [mvn, "-B", "-q", "-f", str(POM), f"{DEPENDENCY_PLUGIN}:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, timeout=900)
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if proc.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrokerError(f"Maven could not resolve Apache Kafka {dist.version} "
                              f"(exit {proc.returncode}):\n{tail}")
        (staging / COMPLETE).write_text("\n".join(jars) + "\n")
        shutil.rmtree(dist.libs, ignore_errors=True)
        staging.rename(dist.libs)
    except subprocess.TimeoutExpired:
        raise BrokerError("Maven did not finish resolving the broker in 15 minutes") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in dist.libs.glob("*.jar"))
    say(f"Apache Kafka {dist.version}: {len(jars)} jars, {size / 2**20:.0f} MiB in {dist.libs}")
    return dist
