"""The local engine: the batch path and training sets on every core of this machine.

Phase 1 (scan): the events input is cut into chunks in log order; each worker process validates
its chunks (the stateless §6 checks) and files every valid event under its user's partition.
Phase 2 (users): each worker takes partitions, reads a partition's events from every chunk in
chunk order (so in log order) and runs each user through the core (offline.core). This process
merges: profiles in user order, dead letters in line order. With one worker both phases run in
this process, in memory; the result is the same with any number of workers.
"""
from __future__ import annotations

import ctypes
import gc
import heapq
import importlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any, Callable, cast

import numpy as np
import orjson

from features.config import ProfileConfig
from features.runtime import FeatureRuntime
from offline.batch_io import BatchReport, Progress
from offline.formats import (
    RecordWriter,
    check_out,
    dead_letter_arrow_schema,
    detect,
    dlq_path,
    load_items,
    numbered_chunks,
    plan_chunks,
    profile_arrow_schema,
    read_chunk,
)
from offline.scan import COLUMNS, Rows, scan_jsonl, scan_parquet
from offline.steps import (
    batch_users,
    check_order_by,
    fill_originals,
    in_log_order,
    partition_of,
    partitions_of,
    training_users,
)
from offline.training import read_labels, write_training_set

PARTITIONS_PER_WORKER = 4


def runtime(cfg: ProfileConfig, items: str | Path | None) -> FeatureRuntime:
    """The compiled config and item catalog (items: any form `offline.formats` reads)."""
    rt = FeatureRuntime.from_config(cfg)
    if items is not None:
        load_items(rt.catalog, items)
    return rt


def feature_ids(rt: FeatureRuntime) -> list[str]:
    return ["106", "107", "108", "110", *rt.engine.extensions]


@dataclass(frozen=True)
class Job:
    """What every worker process needs (sent once, at its start)."""
    cfg: ProfileConfig
    items: str | None
    now: float                  # one clock for the future_timestamp check of the whole run
    as_of: int | None
    order_by: str | None
    partitions: int
    tmp: str | None             # where phase 1 files events for phase 2; None: in memory


_job: Job | None = None
_rt: FeatureRuntime | None = None


def _init(job: Job, rt: FeatureRuntime | None = None, worker: bool = True) -> None:
    global _job, _rt
    _job, _rt = job, rt or runtime(job.cfg, job.items)
    if worker:
        keep_freed_memory()


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> None:
    """Give free heap back to the kernel before forking: a forked worker would otherwise copy
    every page of it that it reuses (copy-on-write), which made workers forked from a process
    that had run a big job in memory slower than one that had not."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of returning every large numpy temporary
    to the kernel and faulting it in again (measured: page faults were about a tenth of the
    batch path's CPU time). For processes that run one offline job; a no-op off glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 1 << 30)        # M_MMAP_THRESHOLD: large blocks from the heap
        libc.mallopt(-1, 1 << 31)        # M_TRIM_THRESHOLD: keep up to 2 GiB of free heap


@contextmanager
def _paused_gc():
    """The phases allocate millions of small acyclic objects (tuples, events); the cycle
    collector's passes over them cost more than building them (about 40% of loading a
    partition, measured), and free nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _bucket_file(tmp: str, chunk: int, part: int) -> Path:
    return Path(tmp) / f"c{chunk:05d}-p{part:04d}.bin"


def _write_rows(path: Path, rows: Rows) -> None:
    """The columns as one int64 matrix after a two-number header (rows, bytes of ids), then
    the event ids as a JSON list (no pickle)."""
    ids = orjson.dumps(rows.event_id.tolist())
    with open(path, "wb") as f:
        np.array([len(rows), len(ids)], dtype=np.int64).tofile(f)
        np.stack([rows.cols[c] for c in COLUMNS]).astype(np.int64, copy=False).tofile(f)
        f.write(ids)


def _read_rows(path: Path) -> Rows:
    raw = path.read_bytes()
    n, n_ids = np.frombuffer(raw, dtype=np.int64, count=2).tolist()
    matrix = np.frombuffer(raw, dtype=np.int64, count=n * len(COLUMNS), offset=16)
    matrix = matrix.reshape(len(COLUMNS), n)
    return Rows(dict(zip(COLUMNS, matrix)), orjson.loads(raw[16 + 8 * n * len(COLUMNS):]))


def _read_events(chunk, counts: Counter) -> tuple[Rows, list, int]:
    """Phase 1's validation of one chunk, on columns (offline.scan) where certain: (rows, dead
    letters, the chunk's newlines: JSONL chunks are counted here, in the workers)."""
    job, rt = cast(Job, _job), cast(FeatureRuntime, _rt)      # set by _init
    if chunk.fmt == "jsonl":
        with open(chunk.path, "rb") as f:
            f.seek(chunk.start)
            data = f.read(chunk.end - chunk.start)
        rows, dead = scan_jsonl(rt.parser, data, chunk.first_line, job.now, job.as_of, counts)
        return rows, dead, data.count(b"\n")
    return (*scan_parquet(rt.parser, chunk, job.now, job.as_of, job.order_by, counts), 0)


@_paused_gc()
def _scan(c: int, chunk) -> tuple[Counter, list | None, list, int]:
    """Phase 1 for one chunk: (counts, the partitions' rows when in memory, dead letters,
    newlines)."""
    job = cast(Job, _job)                # set by _init
    counts: Counter = Counter()
    rows, dead, newlines = _read_events(chunk, counts)
    if job.partitions == 1:
        buckets = [rows]
    else:
        part = partitions_of(rows.cols["user"], job.partitions)
        # 16-bit keys sort stably by radix (int64 ones by merging, several times slower)
        order = np.argsort(part.astype(np.uint16 if job.partitions <= 1 << 16 else np.int64),
                           kind="stable")
        bounds = np.searchsorted(part[order], np.arange(job.partitions + 1))
        buckets = [rows.take(order[a:b]) for a, b in zip(bounds, bounds[1:])]
    if job.tmp is None:
        return counts, buckets, dead, newlines
    for p, bucket in enumerate(buckets):
        _write_rows(_bucket_file(job.tmp, c, p), bucket)
    return counts, None, dead, newlines


def _partition_rows(p: int, shifts: list[int], memory: list | None) -> Rows:
    """A partition's events grouped by user (users ascending), each user's in log order;
    shifts: what to add to each chunk's line numbers (chunks numbered from 1 in phase 1)."""
    job = cast(Job, _job)                # set by _init
    if memory is not None:
        parts = [buckets[p] for buckets in memory]
    else:
        parts = []
        for c in range(len(shifts)):
            f = _bucket_file(cast(str, job.tmp), c, p)      # not in memory: in job.tmp
            parts.append(_read_rows(f))
            f.unlink()
    for part, shift in zip(parts, shifts):
        if shift:
            part.cols["line"] = part.cols["line"] + shift
    return in_log_order(Rows.concat(parts), job.order_by is not None)


@_paused_gc()
def _batch_partition(p: int, shifts: list[int], trigger: str, updated_at: float,
                     memory: list | None = None) -> tuple[Counter, list, list]:
    """Phase 2 of the batch path: (counts, [(user_id, record line)] in user order, dead)."""
    rows = _partition_rows(p, shifts, memory)
    counts: Counter = Counter()
    dead: list = []
    out = batch_users(cast(FeatureRuntime, _rt), rows, cast(Job, _job).as_of, trigger,
                      updated_at, counts, dead)
    return counts, out, dead


@_paused_gc()
def _training_partition(p: int, shifts: list[int], wanted: dict[int, set[int]],
                        memory: list | None = None) -> dict[tuple[int, int], dict]:
    """Phase 2 of a training set: {(user_id, as_of): profile fields} for the labels here."""
    return training_users(cast(FeatureRuntime, _rt), _partition_rows(p, shifts, memory), wanted)


def _import_before_fork() -> None:
    """What every worker imports to scan: pyarrow's readers and compute functions, and pandas,
    which pyarrow imports on first use of them. Imported once here and shared by the forked
    workers instead of once in each (about 0.45 s of CPU a worker, measured)."""
    for name in ("pyarrow.json", "pyarrow.compute", "pyarrow.parquet", "pandas"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _context():
    """fork where it is safe (Linux, no other thread in this process): the workers start in
    milliseconds with this process's modules and item catalog; else spawn (about half a
    second a worker: a new interpreter, imports, the catalog loaded again)."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return get_context("fork")
    return get_context("spawn")


@dataclass
class _Run:
    """One run's workers, chunks and phase 1 results."""
    cfg: ProfileConfig
    items: str | Path | None
    events: str
    events_format: str
    workers: int
    as_of: int | None
    order_by: str | None
    progress: Progress
    tmp_parent: Path
    counts: Counter = field(default_factory=Counter)
    dead: list = field(default_factory=list)
    memory: list | None = None

    def __post_init__(self) -> None:
        check_order_by(self.events_format, self.order_by)
        one = self.workers == 1
        self.chunks = plan_chunks(self.events, self.events_format,
                                  1 if one else self.workers * PARTITIONS_PER_WORKER,
                                  count_lines=False)
        self.shifts = [0] * len(self.chunks)
        self.partitions = 1 if one else self.workers * PARTITIONS_PER_WORKER
        self.tmp_parent.mkdir(parents=True, exist_ok=True)
        self.tmp = None if one else tempfile.mkdtemp(prefix=".profiles-offline-",
                                                     dir=self.tmp_parent)
        self.job = Job(self.cfg, None if self.items is None else str(self.items), time.time(),
                       self.as_of, self.order_by, self.partitions, self.tmp)
        self.pool = None
        if one:
            _init(self.job, worker=False)
            self.rt = cast(FeatureRuntime, _rt)     # set by _init
        else:
            ctx = _context()
            if ctx.get_start_method() == "fork":
                self.rt = runtime(self.cfg, self.items)     # the workers inherit it
                args: tuple = (self.job, self.rt)
                _import_before_fork()
                release_freed_memory()
            else:
                self.rt = runtime(self.cfg, None)  # for the feature ids; workers load items
                args = (self.job,)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init,
                                            initargs=args)

    def scan(self) -> None:
        """Phase 1 over every chunk, with progress as chunks finish."""
        if self.pool is None:
            results = []
            for c, chunk in enumerate(self.chunks):
                results.append(_scan(c, chunk))
                self.progress.tick(sum(r[0]["events"] for r in results))
            self.memory = [r[1] for r in results]
        else:
            futures = [self.pool.submit(_scan, c, chunk) for c, chunk in enumerate(self.chunks)]
            results = []
            for fut in futures:
                results.append(fut.result())
                self.progress.tick(sum(r[0]["events"] for r in results))
        if self.events_format == "jsonl":      # planned without reading: number them now
            planned = self.chunks
            self.chunks = numbered_chunks(planned, [r[3] for r in results])
            self.shifts = [c.first_line - p.first_line for c, p in zip(self.chunks, planned)]
        for (counts, _, dead, _), shift in zip(results, self.shifts):
            self.counts.update(counts)
            self.dead += [(d[0] + shift, *d[1:]) for d in dead] if shift else dead
        self.progress.tick(self.counts["events"], force=True)

    def per_partition(self, fn: Callable, args: list[tuple],
                      done: Callable[[int, int, Any], None] | None = None) -> list:
        """fn over every partition; `done(k, n, result)` after each of the n, in order."""
        if self.pool is None:
            out = [fn(0, self.shifts, *args[0], memory=self.memory)]
        else:
            futures = [self.pool.submit(fn, p, self.shifts, *a) for p, a in enumerate(args)]
            out = []
            for f in futures:
                out.append(f.result())
                if done is not None:
                    done(len(out), len(futures), out[-1])
            return out
        if done is not None:
            done(1, 1, out[0])
        return out

    def originals(self, dead: list) -> list:
        """Fill in the original of phase 2's dead letters from the chunks that hold them."""
        lines = sorted(d[0] for d in dead if d[4] is None)
        if not lines:
            return dead
        firsts = [c.first_line for c in self.chunks[1:]] + [float("inf")]
        rows = (row for c, nxt in zip(self.chunks, firsts)
                if any(c.first_line <= x < nxt for x in lines) for row in read_chunk(c))
        return fill_originals(rows, dead)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


BYTES_PER_DEFAULT_WORKER = 8 << 20


def default_workers(events: str | Path) -> int:
    """One worker per core, but no more than one per 8 MiB of input: below that the split
    (worker processes, each chunk's partitions written and read back) costs more than it saves
    (measured on the 7.5 MB bench sample: 0.15 s more CPU with 2 workers than with 1, and no
    faster; a spawned worker costs half a second more)."""
    p = Path(events)
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else \
        p.stat().st_size if p.exists() else 0
    return max(1, min(os.cpu_count() or 1, size // BYTES_PER_DEFAULT_WORKER))


def _workers(workers: int | None, events: str | Path) -> int:
    return workers if workers else default_workers(events)


def run_batch(cfg: ProfileConfig, items: str | Path | None, events: str | Path,
              out: str | Path, as_of: int | None = None, workers: int | None = None,
              events_format: str | None = None, out_format: str | None = None,
              order_by: str | None = None, progress_stream: IO | None = sys.stderr,
              trigger: str | None = None) -> BatchReport:
    """The batch path (reference.batch.run_batch's result) on `workers` processes."""
    t0 = time.perf_counter()
    out = Path(out)
    check_out(out)
    out_format = detect(out, out_format)
    run = _Run(cfg, items, str(events), detect(events, events_format),
               _workers(workers, events), as_of, order_by, Progress(progress_stream), out.parent)
    try:
        run.scan()
        trigger = trigger or ("event" if as_of is None else "weekly")
        with _paused_gc():          # the workers' records arrive as many small objects
            results = run.per_partition(_batch_partition,
                                        [(trigger, time.time())] * run.partitions)
        dead = run.dead
        for counts, _, part_dead in results:
            run.counts.update(counts)
            dead += part_dead
        dead = run.originals(dead)
    finally:
        run.close()
    with RecordWriter(out, out_format, profile_arrow_schema(feature_ids(run.rt))) as w:
        for _, line in heapq.merge(*(r[1] for r in results), key=lambda x: x[0]):
            w.write_line(line)
    write_dead_letters(out, out_format, dead)
    return batch_report(run.counts, time.perf_counter() - t0)


@_paused_gc()
def _map_partition(p: int, shifts: list[int], fn: Callable, args: tuple,
                   memory: list | None = None) -> Any:
    return fn(cast(FeatureRuntime, _rt), _partition_rows(p, shifts, memory), *args)


def map_users(cfg: ProfileConfig, items: str | Path | None, events: str | Path,
              fn: Callable[..., Any], args: tuple = (), until: int | None = None,
              workers: int | None = None, events_format: str | None = None,
              order_by: str | None = None, progress_stream: IO | None = sys.stderr,
              label: str = "scan", done: Callable[[int, int, Any], None] | None = None
              ) -> tuple[Counter, list, list]:
    """`fn(runtime, rows, *args)` over the log's valid events in shares of users (rows grouped
    by user, users ascending, each user's in log order), on `workers` processes; `fn` must be
    a module-level function. Events after `until` are left out (counted as after_as_of).
    `done(k, n, result)` is told of each share's result as it comes. Returns (the scan's
    counts, its dead letters, [fn's result per share]); a result with a `dead` list (too_late
    dead letters without their original) gets them filled in."""
    run = _Run(cfg, items, str(events), detect(events, events_format),
               _workers(workers, events), until, order_by, Progress(progress_stream,
                                                                      label=label),
               Path(tempfile.gettempdir()))
    try:
        run.scan()
        with _paused_gc():
            results = run.per_partition(_map_partition, [(fn, args)] * run.partitions, done)
        fill_results_dead(results, run.originals)
        return run.counts, run.dead, results
    finally:
        run.close()


def fill_results_dead(results: list, fill: Callable[[list], list]) -> None:
    """Give the dead letters in the results' `dead` lists their originals, with one `fill`."""
    holders = [r for r in results if getattr(r, "dead", None)]
    filled = iter(fill([d for r in holders for d in r.dead]))
    for r in holders:
        r.dead = [next(filled) for _ in r.dead]


def write_dead_letters(out: Path, fmt: str, dead: list) -> None:
    with RecordWriter(dlq_path(out, fmt), fmt, dead_letter_arrow_schema()) as w:
        for line, _, reason, message, original in sorted(dead, key=lambda d: (d[0], d[1])):
            w.write({"reason": reason, "message": message, "line": line, "original": original})


def batch_report(counts: Counter, seconds: float) -> BatchReport:
    """The batch summary from the engines' summed counts."""
    r = BatchReport(events=counts["events"], applied=counts["applied"],
                    duplicates=counts["duplicates"], after_as_of=counts["after_as_of"],
                    users=counts["users"], seconds=seconds)
    for k, v in counts.items():
        if k.startswith("rejected:"):
            r.rejected[k.split(":", 1)[1]] += v
    return r


@dataclass
class TrainingReport:
    labels: int
    users: int
    events: int
    rejected: dict[str, int]
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {"labels": self.labels, "users": self.users, "events": self.events,
                "rejected": dict(sorted(self.rejected.items())),
                "seconds": round(self.seconds, 3),
                "labels_per_second": round(self.labels / self.seconds) if self.seconds else 0,
                "events_per_second": round(self.events_per_second)}


def run_training_set(cfg: ProfileConfig, items: str | Path | None, events: str | Path,
                     labels: str | Path, out: str | Path, workers: int | None = None,
                     events_format: str | None = None, labels_format: str | None = None,
                     out_format: str | None = None, order_by: str | None = None,
                     progress_stream: IO | None = sys.stderr) -> TrainingReport:
    """Point-in-time training rows: each label row with its user's profile as of its ts."""
    t0 = time.perf_counter()
    out = Path(out)
    check_out(out)
    out_format = detect(out, out_format)
    lab = read_labels(labels, detect(labels, labels_format))
    run = _Run(cfg, items, str(events), detect(events, events_format),
               _workers(workers, events), None, order_by,
               Progress(progress_stream, label="training-set"), out.parent)
    try:
        run.scan()
        wanted: list[dict[int, set[int]]] = [{} for _ in range(run.partitions)]
        for uid, T in lab.keys:
            wanted[partition_of(uid, run.partitions)].setdefault(uid, set()).add(T)
        found: dict[tuple[int, int], dict] = {}
        with _paused_gc():          # the workers' rows arrive as many small objects
            for part in run.per_partition(_training_partition, [(w,) for w in wanted]):
                found.update(part)
            fields = [found[k] for k in lab.keys]
    finally:
        run.close()
    with _paused_gc():
        write_training_set(out, out_format, lab, fields, feature_ids(run.rt))
    write_dead_letters(out, out_format, run.dead)
    rejected = {k.split(":", 1)[1]: v for k, v in run.counts.items() if k.startswith("rejected:")}
    return TrainingReport(len(lab.keys), len({u for u, _ in lab.keys}), run.counts["events"],
                          rejected, time.perf_counter() - t0)
