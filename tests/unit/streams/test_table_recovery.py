"""When local table state counts as ahead of its log, and dropping a partition's RocksDB."""
from __future__ import annotations

from types import SimpleNamespace

from streams.faust_compat.table_recovery import ahead_of_log, drop_partition
from streams.state.rocksdb import open_store


def test_ahead_of_log():
    assert ahead_of_log(None, -1, None, None) == []              # no local state
    assert ahead_of_log(41, 41, 99, 100) == []                   # caught up with both
    assert ahead_of_log(10, 41, 50, 100) == []                   # behind: recovery reads on
    assert ahead_of_log(41, -1, None, None) == ["changelog offset 41, the changelog ends at -1"]
    # one record left in the changelog: Faust's own check misses this one (0 is falsy)
    assert ahead_of_log(41, 0, None, None) == ["changelog offset 41, the changelog ends at 0"]
    assert ahead_of_log(None, None, 99, 0) == [
        "processed the source up to offset 99, the source ends at -1"]
    assert len(ahead_of_log(41, -1, 99, 0)) == 2
    assert ahead_of_log(5, 9, 100, 100) != []                    # offset 100 does not exist
    assert ahead_of_log(5, 9, 99, 100) == []


def test_drop_partition_empties_every_key(tmp_path):
    store = open_store(tmp_path / "p0")
    keys = [b"42", b"\x00partition", b"\x00due" + b"\x00" * 12, b"__faust\x00offset__",
            b"\xff\xfe odd", b"\xff"]
    for k in keys:
        store.put(k, b"v")
    table = SimpleNamespace(data=SimpleNamespace(_db_for_partition=lambda p: store.db))
    drop_partition(table, 0)
    assert [store.get(k) for k in keys] == [None] * len(keys)
    assert list(store.keys()) == []
    store.close()
