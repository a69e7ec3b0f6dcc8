"""Every reach into Faust's or aiokafka's private parts, in one package (faust-streaming 0.15,
pinned below 0.16 in pyproject). Nothing outside it touches a private name of either library;
ruff's SLF001 is allowed here only.

- `consumer`: our consumer, its thread and transport (end offsets from fetch responses, the
  fetch max wait, seeks that make fetched records stale), and the hooks that switch them.
- `drain`: our copy of Faust's `Consumer._drain_messages` feeding a raw feed, and the check
  that the installed original is still the one it was copied from (`upstream/`).
- `feed`: a raw feed plugged into the consumer; its messages tracked, untracked and acked.
- `tables`: a Faust table read and written by partition; each partition's RocksDB.
- `table_recovery`: table recovery that drops local state ahead of its log.
- `producer`: draining the changelog producer's `send_soon` buffer.
- `group`: the group, the assignment and table recovery as the app knows them.
- `clients`: aiokafka calls with no public API, and the client that re-bootstraps when it
  knows no broker.

Modules are imported where needed: importing this package imports neither library.
"""
