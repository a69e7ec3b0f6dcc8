"""What a fresh broker start reuses from the ones before it, kept beside the distribution's jars:

- `storage-template/`: the storage tool's output for a new cluster. Formatting is a JVM of its
  own (about 1.5 s on 2 cores); what it writes for our one-node settings is `bootstrap.checkpoint`
  (the feature levels, the same for every cluster but for timestamps and CRCs) and
  `meta.properties` (the cluster and directory ids). A new cluster copies the first and writes
  the second with new ids, as the tool would.
- `broker.jsa`: a class-data-sharing archive of the classes a broker loads (JDK 13+'s dynamic
  archive), made by `profiles broker install`. A start maps it instead of loading and verifying
  those classes from the jars: about a second less on 2 cores. A JVM that cannot use it (another
  Java build) says so in the broker log and starts as without it.

Both are made into a temporary name and renamed, so a process that sees one sees it whole.
"""
from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from deploy.broker.distribution import Distribution

TEMPLATE = "storage-template"
CHECKPOINT = "bootstrap.checkpoint"
ARCHIVE = "broker.jsa"


def template_dir(dist: Distribution) -> Path:
    return dist.home / TEMPLATE


def archive_path(dist: Distribution) -> Path:
    return dist.home / ARCHIVE


def archive_options(dist: Distribution) -> tuple[str, ...]:
    """The JVM options that map the class archive, when there is one."""
    path = archive_path(dist)
    return (f"-XX:SharedArchiveFile={path}",) if path.is_file() else ()


def new_directory_id() -> str:
    """A log dir's id as Kafka's `Uuid.randomUuid` makes them: never one of the reserved low
    values, never starting with "-"."""
    while True:
        raw = os.urandom(16)
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if int.from_bytes(raw, "big") >= 100 and not text.startswith("-"):
            return text


def meta_properties(cluster_id: str, node_id: int, directory_id: str) -> str:
    stamp = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    return (f"#\n#{stamp}\nnode.id={node_id}\ndirectory.id={directory_id}\nversion=1\n"
            f"cluster.id={cluster_id}\n")


def ensure_template(dist: Distribution, format_into: Callable[[Path], Path]) -> Path:
    """The storage template, made once: `format_into(workdir)` runs the storage tool in a
    scratch folder and returns the checkpoint it wrote."""
    done = template_dir(dist)
    if (done / CHECKPOINT).is_file():
        return done
    dist.home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".format-"))
    staging = Path(tempfile.mkdtemp(prefix=f".{TEMPLATE}-", dir=dist.home))
    try:
        shutil.copyfile(format_into(work), staging / CHECKPOINT)
        try:
            staging.rename(done)
        except OSError:             # another process made it meanwhile
            if not (done / CHECKPOINT).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return done


def format_from_template(template: Path, data_dir: Path, cluster_id: str, node_id: int) -> None:
    """A new cluster in `data_dir`, as the storage tool writes one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template / CHECKPOINT, data_dir / CHECKPOINT)
    tmp = data_dir / "meta.properties.tmp"
    tmp.write_text(meta_properties(cluster_id, node_id, new_directory_id()))
    tmp.rename(data_dir / "meta.properties")
