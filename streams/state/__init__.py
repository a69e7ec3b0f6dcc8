"""The state store: one partition's local keys and values behind one interface
(`streams.state.store.PartitionStore`), with one RocksDB implementation (`streams.state.rocksdb`,
the only module that imports rocksdict). It knows bytes keys and values only: what the keys mean
is streams.state.table_keys's, and it never talks to Kafka (the changelog is the table's business).
Importing it does not import Faust."""
from streams.state.store import KeyWrites, PartitionStore, StoreLocked

__all__ = ["KeyWrites", "PartitionStore", "StoreLocked"]
