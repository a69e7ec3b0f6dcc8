"""A librdkafka producer that writes in Kafka transactions, with the consumer group's offsets in
each one (KIP-447): what a worker commits with under `kafka.processing_guarantee:
exactly_once_v2` (streams.pipeline.outputs.TransactionalOutputs, docs/RELIABILITY.md).

One transaction holds a commit's records (state changelog, profile-updates, aggregates, dead
letters, through `produce`) and the offsets the group resumes from, sent with the member's
group metadata (streams.faust_compat.group_metadata). Readers with `isolation.level`
read_committed see all of it or, once it is aborted, none of it. The broker fences:
- a producer a newer one with the same transactional id has replaced (a restarted worker's
  previous process): `TransactionFenced`, and this producer is done;
- offsets sent for a generation the group has left (a worker that lost its partitions):
  `TransactionAborted`, the transaction is aborted and the producer can go on.

librdkafka's transactional calls block, so they run on a thread; `produce` only queues, and
begins a transaction when none is open, so the changelog writer and the output publisher share
one producer as they would a plain one (`flush` and `poll` are librdkafka's).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import confluent_kafka as ck

log = logging.getLogger(__name__)
TIMEOUT = 30.0          # seconds each blocking transactional call may take
STUCK_MARGIN = 5.0      # after TIMEOUT and this, the call is given up as stuck


class TransactionFenced(RuntimeError):
    """The broker fenced this producer (or its error is fatal): nothing it has not committed
    becomes visible, and it can write no more."""


class TransactionAborted(RuntimeError):
    """The transaction was aborted (e.g. its offsets were for a generation the group has left):
    nothing of it becomes visible; the producer can begin another."""


class TransactionsUnavailable(RuntimeError):
    """The broker did not start this producer's transactions: one without them, or whose
    transaction log cannot be created (more replicas asked than brokers live)."""


def _settings(settings: dict[str, Any], transactional_id: str) -> dict[str, Any]:
    return {"linger.ms": 5, "reconnect.backoff.max.ms": 1000, **settings,
            "transactional.id": transactional_id, "acks": "all",
            "enable.idempotence": True}


def _raise_if_fatal(err: Any, cause: BaseException) -> None:
    if err.fatal():
        raise TransactionFenced(str(err)) from cause


async def _bounded(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking librdkafka call on a thread, given up TIMEOUT + STUCK_MARGIN seconds on.
    send_offsets_to_transaction can block past its own timeout when the group coordinator went
    away (confluentinc/librdkafka#5456, #5511: a broker restart under a worker,
    tests/integration/test_broker_restart.py). Its thread is left blocked; the producer is
    done, and the worker restarts with a new one."""
    call = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.wait_for(asyncio.shield(call), TIMEOUT + STUCK_MARGIN)
    except asyncio.TimeoutError:
        raise TransactionFenced(f"{getattr(fn, '__name__', fn)} did not return within "
                                f"{TIMEOUT + STUCK_MARGIN:.0f} s (a librdkafka call past its "
                                "timeout): this producer cannot go on") from None


class TransactionalProducer:
    def __init__(self, settings: dict[str, Any], transactional_id: str,
                 producer_factory: Callable[[dict[str, Any]], Any] = ck.Producer):
        self.settings = _settings(settings, transactional_id)
        self._producer: Any = producer_factory(self.settings)
        self._ready = False
        self.in_transaction = False

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await _bounded(fn, *args)
        except ck.KafkaException as e:
            err = e.args[0]
            _raise_if_fatal(err, e)
            if err.txn_requires_abort():
                try:
                    await _bounded(self._producer.abort_transaction, TIMEOUT)
                except ck.KafkaException as abort_failed:
                    _raise_if_fatal(abort_failed.args[0], abort_failed)
                    raise
                finally:
                    self.in_transaction = False
                raise TransactionAborted(str(err)) from e
            raise

    async def start(self) -> None:
        """Register the transactional id, once: that fences the id's earlier producers and
        aborts a transaction one of them left open."""
        if not self._ready:
            try:
                await self._call(self._producer.init_transactions, TIMEOUT)
            except ck.KafkaException as e:
                raise TransactionsUnavailable(
                    f"the broker did not start transactions for "
                    f"{self.settings['transactional.id']!r} ({e.args[0]}): "
                    "kafka.processing_guarantee exactly_once_v2 (the default) needs brokers "
                    "with transactions (Kafka 2.5+, transaction.state.log.replication.factor "
                    "and transaction.state.log.min.isr no more than the brokers that are up); "
                    "otherwise set kafka.processing_guarantee: at_least_once") from e
            self._ready = True

    async def begin(self) -> None:
        """Start a transaction."""
        await self.start()
        self._begin()

    def _begin(self) -> None:
        if not self._ready:
            raise RuntimeError("TransactionalProducer.start() was not awaited")
        try:
            self._producer.begin_transaction()      # (local: no request to the broker)
        except ck.KafkaException as e:
            _raise_if_fatal(e.args[0], e)
            raise
        self.in_transaction = True

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None,
                partition: int | None = None, on_delivery: Any = None) -> None:
        """Queue a record in the open transaction, begun here when none is (BufferError when
        librdkafka's queue is full, as Producer.produce)."""
        if not self.in_transaction:
            self._begin()
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        self._producer.produce(topic, value, key, **kwargs)

    def flush(self, timeout: float) -> int:
        """Deliver what is queued (the transaction stays open); records still queued."""
        return self._producer.flush(timeout)

    def poll(self, timeout: float) -> int:
        return self._producer.poll(timeout)

    async def commit(self, offsets: dict[tuple[str, int], int] | None = None,
                     group_metadata: bytes | None = None) -> None:
        """Commit the open transaction with the group's next offsets ((topic, partition) ->
        the next offset to read) sent under `group_metadata`; a transaction of the offsets
        alone when none is open, nothing when there are none either."""
        if not self.in_transaction:
            if not offsets:
                return
            self._begin()
        if offsets:
            if group_metadata is None:
                raise ValueError("offsets are committed with the group's metadata")
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


class OpenTransactions:
    """Waits out transactions still open on partitions a worker is about to restore: what
    Kafka Streams gets from OffsetFetch's require_stable (KIP-447), which aiokafka does not
    send. A worker that lost its partitions while its commit's transaction was open (frozen,
    or cut off) either commits it, if it comes back before the transaction's timeout (its
    offsets were sent while it was a member), or the broker aborts it at the timeout. Until
    then the new owner must not start: a restore reads up to the last stable offset, and the
    events after the committed offsets would be applied a second time once that transaction
    commits. Every commit writes the clock of each partition it covers to that partition's
    changelog, so an open transaction there is one that may still commit its offsets."""

    POLL = 0.25             # seconds between two looks
    LOOK_TIMEOUT = 5.0      # seconds one look may take

    def __init__(self, settings: dict[str, Any], timeout: float):
        self.settings = settings
        self.timeout = timeout      # the transaction timeout and the broker's abort delay
        self._admin: Any = None

    def open(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(Blocking.) The partitions with records past their last stable offset:
        (topic, partition) -> (last stable offset, high watermark)."""
        if not tps:
            return {}
        from confluent_kafka.admin import AdminClient, OffsetSpec
        if self._admin is None:
            self._admin = AdminClient(self.settings)
        ends = {}
        for level in (ck.IsolationLevel.READ_COMMITTED, ck.IsolationLevel.READ_UNCOMMITTED):
            futures = self._admin.list_offsets(
                {ck.TopicPartition(t, p): OffsetSpec.latest() for t, p in tps},
                isolation_level=level, request_timeout=self.LOOK_TIMEOUT)
            ends[level] = {(tp.topic, tp.partition): f.result().offset
                           for tp, f in futures.items()}
        stable, high = ends[ck.IsolationLevel.READ_COMMITTED], \
            ends[ck.IsolationLevel.READ_UNCOMMITTED]
        return {tp: (stable[tp], high[tp]) for tp in tps if stable[tp] < high[tp]}

    async def settle(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        """Wait until no transaction is open on `tps`, for up to `timeout` seconds; returns
        what is still open then (logged by the caller)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        still = await self._look(tps)
        if not still:
            return {}
        log.info("transactions open on %s (last stable offset, high watermark; None: not "
                 "known yet): waiting up to %.0f s for them to end", still, self.timeout)
        while still and loop.time() < began + self.timeout:
            await asyncio.sleep(self.POLL)
            still = await self._look(list(still))
        if not still:
            log.info("the open transactions ended after %.1f s", loop.time() - began)
        return still

    async def _look(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        """`open`, with every partition counted as open while the broker cannot say (it
        restarts, or is out of reach)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self.open, tps)
        except ck.KafkaException as e:
            log.warning("could not list the offsets of %d partitions (%s): asking again",
                        len(tps), e.args[0])
            return {tp: None for tp in tps}
