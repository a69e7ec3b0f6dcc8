"""A librdkafka producer that writes in Kafka transactions, with the consumer group's offsets in
each one (KIP-447): the piece `processing.guarantee: exactly_once_v2` is to commit with
(issue 27; not yet wired into the pipeline, docs/RELIABILITY.md).

One transaction holds a commit's records (state changelog, profile-updates, aggregates, dead
letters, through `produce`) and the offsets the group resumes from, sent with the member's
group metadata (streams.faust_compat.group_metadata). Readers with `isolation.level`
read_committed see all of it or, once it is aborted, none of it. The broker fences:
- a producer a newer one with the same transactional id has replaced (a restarted worker's
  previous process): `TransactionFenced`, and this producer is done;
- offsets sent for a generation the group has left (a worker that lost its partitions):
  `TransactionAborted`, the transaction is aborted and the producer can go on.

librdkafka's transactional calls block, so they run on a thread; `produce` only queues.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import confluent_kafka as ck

TIMEOUT = 30.0          # seconds each blocking transactional call may take


class TransactionFenced(RuntimeError):
    """The broker fenced this producer (or its error is fatal): nothing it has not committed
    becomes visible, and it can write no more."""


class TransactionAborted(RuntimeError):
    """The transaction was aborted (e.g. its offsets were for a generation the group has left):
    nothing of it becomes visible; the producer can begin another."""


def _settings(settings: dict[str, Any], transactional_id: str) -> dict[str, Any]:
    return {"linger.ms": 5, "reconnect.backoff.max.ms": 1000, **settings,
            "transactional.id": transactional_id, "acks": "all",
            "enable.idempotence": True}


class TransactionalProducer:
    def __init__(self, settings: dict[str, Any], transactional_id: str,
                 producer_factory: Callable[[dict[str, Any]], Any] = ck.Producer):
        self.settings = _settings(settings, transactional_id)
        self._producer: Any = producer_factory(self.settings)
        self._ready = False
        self.in_transaction = False

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except ck.KafkaException as e:
            err = e.args[0]
            if err.fatal():
                raise TransactionFenced(str(err)) from e
            if err.txn_requires_abort():
                await self._abort_after(err)
            raise

    async def _abort_after(self, err: Any) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self._producer.abort_transaction, TIMEOUT)
        except ck.KafkaException as e:
            if e.args[0].fatal():
                raise TransactionFenced(str(e.args[0])) from e
            raise
        finally:
            self.in_transaction = False
        raise TransactionAborted(str(err))

    async def begin(self) -> None:
        """Start a transaction (registering the transactional id first, once: that fences the
        id's earlier producers)."""
        if not self._ready:
            await self._call(self._producer.init_transactions, TIMEOUT)
            self._ready = True
        await self._call(self._producer.begin_transaction)
        self.in_transaction = True

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                partition: int | None = None, on_delivery: Any = None) -> None:
        """Queue a record in the open transaction (BufferError when librdkafka's queue is
        full, as Producer.produce)."""
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        self._producer.produce(topic, value, key, **kwargs)

    async def commit(self, offsets: dict[tuple[str, int], int], group_metadata: bytes) -> None:
        """Commit the open transaction with the group's next offsets ((topic, partition) ->
        the next offset to read) sent under `group_metadata`."""
        if offsets:
            tps = [ck.TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
            await self._call(self._producer.send_offsets_to_transaction, tps, group_metadata,
                             TIMEOUT)
        await self._call(self._producer.commit_transaction, TIMEOUT)
        self.in_transaction = False

    async def abort(self) -> None:
        """Abort the open transaction: nothing of it becomes visible."""
        if self.in_transaction:
            try:
                await self._call(self._producer.abort_transaction, TIMEOUT)
            finally:
                self.in_transaction = False
