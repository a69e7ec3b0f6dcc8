"""RocksDB checkpoints of a worker's table partitions, kept under the data dir.

A backup is a folder `<data_dir>/backups/instance-N/<UTC time>/` holding one RocksDB checkpoint
per partition (hard links where the file system allows, so taking one is cheap) and
`manifest.json`. Restoring copies the checkpoints back as the worker's partition databases; each
keeps Faust's persisted changelog offset, so the worker replays only the changelog written
after the backup.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from features.config import ProfileConfig
from streams.state.rocksdb import is_locked
from streams.state.store import PartitionStore

MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    pass


@dataclass(frozen=True)
class BackupInfo:
    name: str
    path: Path
    created_at: float
    instance: int
    partitions: dict[str, str]          # partition -> folder name of its checkpoint
    tables_dir: str                     # where the partition databases live, relative to the
                                        # instance data dir

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def root(cfg: ProfileConfig, instance_id: int) -> Path:
    return cfg.data_dir / "backups" / f"instance-{instance_id}"


class CheckpointedTable(Protocol):
    """What a backup needs of the state table (streams.faust_compat.tables.PartitionedTable)."""
    name: str

    @property
    def data_dir(self) -> Path: ...

    def store(self, partition: int) -> PartitionStore: ...

    def partition_path(self, partition: int) -> Path: ...


def create(table: CheckpointedTable, partitions: list[int], dest_root: Path,
           clocks: dict[int, str], instance_id: int) -> BackupInfo:
    """Checkpoint each partition's RocksDB of a running table (a
    streams.faust_compat.tables.PartitionedTable) into a new backup folder."""
    instance_dir = table.data_dir
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = dest_root / name
    n = 1
    while path.exists():
        n += 1
        path = dest_root / f"{name}-{n}"
    tmp = path.with_name(path.name + ".partial")
    tmp.mkdir(parents=True)
    files = {}
    for p in partitions:
        target = tmp / table.partition_path(p).name
        table.store(p).checkpoint(target)
        files[str(p)] = target.name
    tables_dir = os.path.relpath(table.partition_path(partitions[0]).parent, instance_dir)
    manifest = {"name": path.name, "created_at": time.time(),
                "instance": instance_id, "table": table.name,
                "partitions": files, "tables_dir": tables_dir, "clocks": clocks}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    tmp.rename(path)                    # a backup folder is complete or absent
    return _info(path)


def _info(path: Path) -> BackupInfo:
    try:
        m = json.loads((path / MANIFEST).read_text())
        return BackupInfo(m["name"], path, m["created_at"], m["instance"], m["partitions"],
                          m["tables_dir"])
    except (OSError, ValueError, KeyError) as e:
        raise BackupError(f"{path}: not a readable backup ({e})") from None


def list_backups(dest_root: Path) -> list[BackupInfo]:
    """Complete backups, oldest first."""
    if not dest_root.is_dir():
        return []
    return sorted((_info(p) for p in dest_root.iterdir()
                   if p.is_dir() and (p / MANIFEST).exists()), key=lambda b: b.created_at)


def prune(dest_root: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` backups (and interrupted partial ones)."""
    removed = []
    for partial in dest_root.glob("*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    for b in list_backups(dest_root)[:-keep]:
        shutil.rmtree(b.path)
        removed.append(b.name)
    return removed


def restore(backup: BackupInfo, instance_dir: Path) -> list[Path]:
    """Put the backup's partition databases in place of the worker's (the worker must be
    stopped). Partitions not in the backup are left alone; Faust recovers them from the
    changelog as usual."""
    tables = instance_dir / backup.tables_dir
    tables.mkdir(parents=True, exist_ok=True)
    written = []
    for folder in backup.partitions.values():
        target = tables / folder
        lock = target / "LOCK"
        if lock.exists() and is_locked(target):
            raise BackupError(f"{target} is open in a running worker; stop it first")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(backup.path / folder, target)
        written.append(target)
    return written

