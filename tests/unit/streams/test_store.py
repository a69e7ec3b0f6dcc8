"""The state store's RocksDB implementation (streams.state.rocksdb) against its interface
(streams.state.store.PartitionStore), on real databases."""
from __future__ import annotations

import subprocess
import sys

import pytest

from streams.state import PartitionStore, StoreLocked
from streams.state.rocksdb import RocksPartitionStore, is_locked, open_store
from streams.state.store import prefix_end

KEYS = [b"\x00due\x00\x00\x00\x05", b"\x00due\x00\x00\x00\x07", b"\x00partition", b"1", b"10",
        b"2", b"__faust\x00offset__", b"\xff", b"\xff\xfe"]


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "p0")
    s.put_many((k, b"v" + k) for k in reversed(KEYS))
    yield s
    s.close()


def test_it_is_a_partition_store(store):
    typed: PartitionStore = store           # (mypy holds the class to the Protocol)
    assert typed.get(b"1") == b"v1" and typed.get(b"3") is None


def test_items_and_keys_are_in_byte_order_within_bounds(store):
    assert list(store.keys()) == KEYS
    assert list(store.items(b"0", b":")) == [(k, b"v" + k) for k in (b"1", b"10", b"2")]
    assert list(store.keys(b"10")) == KEYS[4:]
    assert list(store.keys(b"\x00due", prefix_end(b"\x00due"))) == KEYS[:2]
    assert list(store.keys(b"3", b"4")) == []


def test_put_delete_and_a_fresh_iteration_sees_them(store):
    store.put(b"3", b"x")
    store.delete(b"1")
    assert list(store.keys(b"0", b":")) == [b"10", b"2", b"3"]


def test_prefix_end():
    assert prefix_end(b"\x00due") == b"\x00duf"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") is None


def test_drop_deletes_every_key_the_last_one_too(store):
    store.drop()
    assert list(store.keys()) == []
    store.drop()                            # an empty store stays empty
    assert list(store.keys()) == []


def test_a_checkpoint_opens_as_a_store_of_its_own(store, tmp_path):
    store.checkpoint(tmp_path / "copy")
    store.put(b"1", b"changed after")
    copy = open_store(tmp_path / "copy")
    try:
        assert list(copy.items()) == [(k, b"v" + k) for k in KEYS]
    finally:
        copy.close()


def test_a_store_open_elsewhere_is_locked(tmp_path):
    path = tmp_path / "db"
    store = open_store(path)
    with pytest.raises(StoreLocked):
        open_store(path)
    probe = ("import sys; from pathlib import Path; from streams.state.rocksdb import is_locked; "
             "print(is_locked(Path(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", probe, str(path)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    store.close()
    assert not is_locked(path)


def test_the_hot_path_calls_are_the_databases_own(store):
    # get/put/delete are the rocksdict methods themselves: no wrapper call per state read
    assert isinstance(store, RocksPartitionStore)
    assert store.get == store.db.get and store.put == store.db.put
