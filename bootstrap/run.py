"""`profiles bootstrap`: users' states built from a log file and handed to the stream
(docs/BOOTSTRAP.md).

1. Check the cluster: no worker in the group, and either nothing there yet (no state in the
   changelog, no committed offsets) or an unfinished bootstrap of the same plan to resume.
2. Build every user's state from the log (bootstrap.build, on the local or the Spark engine).
   Nothing is written before this succeeds.
3. Journal "started"; the states, each partition's clock and the feature fingerprint to the
   state changelog; each user's profile to `profile-updates`, closed days to
   `profile-aggregates`, dead letters to the DLQ; the group's offsets; journal "done".
A bootstrap killed anywhere in 3 is resumed by running it again: every write is the same
again (the changelog and `profile-updates` keep the latest per key).
"""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from bootstrap.build import Built, build_users
from bootstrap.cluster import Cluster, GroupView
from bootstrap.handover import BootstrapError, HandOver, plan_id
from bootstrap.progress import ProgressLines
from bootstrap.spill import AGGREGATE, PROFILE, STATE
from features.config import ProfileConfig
from features.schedule import feature_fingerprint
from streams.io.dead_letters import dead_letter
from streams.state.table_keys import FEATURES_KEY, PARTITION_KEY, pack_int


@dataclass
class Summary:
    plan: str
    handover: dict
    events: int = 0
    users: int = 0
    applied: int = 0
    duplicates: int = 0
    after_handover: int = 0             # events of the log after --until (the topic's)
    dead_letters: Counter = field(default_factory=Counter)   # by reason
    states_written: int = 0
    profiles: int = 0
    aggregates: int = 0
    group_offsets: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    build_seconds: float = 0.0          # read, check and build (nothing written yet)
    write_seconds: float = 0.0          # changelog, outputs, group offsets
    resumed: bool = False
    already_done: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["dead_letters"] = dict(self.dead_letters)
        d["events_per_second"] = round(self.events / self.seconds) if self.seconds else 0
        d["users_per_second"] = round(self.users / self.seconds) if self.seconds else 0
        return d


def _write(cluster: Cluster, built: Built, dead: list, plan: str, events: str,
           handover: HandOver, progress: ProgressLines, summary: Summary) -> None:
    """The journal's "started", the states and clocks, then the outputs."""
    cfg = cluster.cfg
    cluster.write_journal({"plan": plan, "status": "started", "events": events,
                           "handover": handover.describe(), "at": time.time()})
    fp = pack_int(feature_fingerprint(cfg))
    meta = [(cluster.changelog, p, key, value) for p in range(cfg.kafka.partitions)
            for key, value in (
                (PARTITION_KEY, handover.clock(p, built.stream_time.get(p, -1)).pack()),
                (FEATURES_KEY, fp))]
    states = ((cluster.changelog, p, k, v) for _, p, k, v in built.iter(STATE))
    phase = progress.phase("state writes", built.counts["states"], "states")
    _fault_point(cluster, states)
    summary.states_written = cluster.produce(_chain(states, meta), phase.tick) - len(meta)
    t = cfg.kafka.topics
    topic = {PROFILE: t.profile_updates, AGGREGATE: t.profile_aggregates}
    records = _chain(((topic[kind], None, k, v) for kind, _, k, v in
                      built.iter(PROFILE, AGGREGATE)),
                     _dead_letters(cfg, events, dead))
    summary.profiles, summary.aggregates = built.counts["profiles"], built.counts["aggregates"]
    phase = progress.phase("publishes", summary.profiles + summary.aggregates + len(dead),
                           "records")
    cluster.produce(records, phase.tick)


def _stop_local_workers(cluster: Cluster, say: Callable[[str], None]) -> GroupView:
    """SIGTERM to the workers `profiles up` started on this host, then the group as it is once
    they have left (or after the session timeout and half a minute more)."""
    from deploy.local_cluster import stop_local_workers
    from deploy.supervisor import supervisor_pid
    cfg = cluster.cfg
    if supervisor_pid(cfg):
        raise BootstrapError(f"a `profiles deploy` supervisor runs (pid {supervisor_pid(cfg)}) "
                             "and would start its workers again: `profiles stop` first")
    for line in stop_local_workers(cfg):
        say(f"bootstrap: {line}")
    deadline = time.monotonic() + cfg.kafka.client.session_timeout_seconds + 30
    while True:
        group = cluster.group_view()
        if not group.members or time.monotonic() > deadline:
            return group
        time.sleep(1.0)


def _check(cluster: Cluster, plan: str, handover: HandOver, stop_workers: bool = False,
           say: Callable[[str], None] = print) -> tuple[str, list[int]]:
    """("fresh" | "resume" | "done", the group's start offsets); BootstrapError when the
    cluster is not one a bootstrap may write into."""
    cfg = cluster.cfg
    n = cfg.kafka.partitions
    group = cluster.group_view()
    if group.members and stop_workers:
        group = _stop_local_workers(cluster, say)
    if group.members:
        raise BootstrapError(
            f"{len(group.members)} workers are in consumer group {cluster.group} "
            f"({', '.join(group.members[:4])}): stop them first (`profiles stop`, "
            "`profiles down`, --stop-workers for those `profiles up` started on this host, or "
            "scale the deployment to 0); a bootstrap writes the states those workers own")
    first = cluster.earliest(cluster.events, n)
    end = cluster.latest(cluster.events, n)
    if handover.until_offsets is not None:
        for p, (o, a, b) in enumerate(zip(handover.until_offsets, first, end)):
            if o > b:
                raise BootstrapError(f"--until-offsets: partition {p} ends at offset {b}; the "
                                     f"log cannot be an export up to {o}")
            if o < a:
                raise BootstrapError(f"--until-offsets: partition {p} starts at offset {a} "
                                     f"(retention); the events at {o}..{a - 1} are in neither "
                                     "the log nor the topic")
        start = list(handover.until_offsets)
    else:
        start = first
    journal = cluster.journal()
    if journal is not None and journal.get("plan") == plan:
        if journal.get("status") == "done":
            return "done", start
        if group.committed and [group.committed.get(p, -1) for p in range(n)] != start:
            raise BootstrapError(f"the group's committed offsets {group.committed} are not "
                                 f"this bootstrap's hand-over {start}: the stream has run since")
        return "resume", start
    if journal is not None and journal.get("status") != "done":
        raise BootstrapError(f"an unfinished bootstrap of another plan ({journal.get('plan')}: "
                             f"{journal.get('events')}, {journal.get('handover')}) is in the "
                             "changelog: run that bootstrap again to finish it")
    held = sum(cluster.latest(cluster.changelog, n))
    if held:
        raise BootstrapError(f"the state changelog {cluster.changelog} holds {held:,} records: "
                             "the stream has state already; a bootstrap writes into an empty "
                             "system (delete the changelog topic and the group to start over)")
    if group.committed:
        raise BootstrapError(f"consumer group {cluster.group} has committed offsets "
                             f"{group.committed}: the stream has run; a bootstrap hands over "
                             "to a group that has not")
    return "fresh", start


def bootstrap(cfg: ProfileConfig, items: str | Path | None, events: str | Path,
              handover: HandOver, engine: str = "local", workers: int | None = None,
              master: str = "local[*]", events_format: str | None = None,
              order_by: str | None = None, out: IO | None = sys.stderr,
              stop_workers: bool = False) -> Summary:
    t0 = time.perf_counter()
    progress = ProgressLines(out)
    plan = plan_id(events, handover, feature_fingerprint(cfg))
    summary = Summary(plan, handover.describe())
    cluster = Cluster(cfg)
    cluster.ensure_topics()
    state, start = _check(cluster, plan, handover, stop_workers, progress.say)
    summary.group_offsets = {str(p): o for p, o in enumerate(start)}
    if state == "done":
        summary.already_done = True
        progress.say(f"bootstrap {plan} is done already: nothing to write")
        return summary
    summary.resumed = state == "resume"
    progress.say(f"bootstrap {plan}: {'resuming' if summary.resumed else 'starting'}; "
                 f"hand-over {handover.describe()}")

    t_build = time.perf_counter()
    # (named by the plan: a run again after a SIGKILL clears what the killed one left)
    spill_dir = Path(tempfile.gettempdir()) / f"profiles-bootstrap-{plan}"
    shutil.rmtree(spill_dir, ignore_errors=True)
    spill_dir.mkdir(parents=True)
    try:
        built, scan_counts, dead = _build(cfg, items, events, handover, engine, workers,
                                          master, events_format, order_by, out, str(spill_dir))
        t_write = time.perf_counter()
        summary.build_seconds = t_write - t_build
        summary.events = scan_counts["events"]
        summary.after_handover = scan_counts["after_as_of"]
        summary.users = built.counts["users"]
        summary.applied = built.counts["applied"]
        summary.duplicates = built.counts["duplicates"]
        summary.dead_letters = Counter(d[2] for d in dead)
        _write(cluster, built, dead, plan, str(events), handover, progress, summary)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    cluster.commit_group(start)
    cluster.write_journal({"plan": plan, "status": "done", "events": str(events),
                           "handover": handover.describe(), "group_offsets": start,
                           "at": time.time()})
    summary.seconds = time.perf_counter() - t0
    summary.write_seconds = time.perf_counter() - t_write
    return summary


KILL_AFTER = "PROFILES_BOOTSTRAP_KILL_AFTER"


def _fault_point(cluster: Cluster, states: Iterator[tuple]) -> None:
    """For the tests of a bootstrap killed halfway: with $PROFILES_BOOTSTRAP_KILL_AFTER=N, the
    process delivers N state writes, then SIGKILLs itself."""
    n = int(os.environ.get(KILL_AFTER) or 0)
    if n > 0:
        cluster.produce(itertools.islice(states, n))
        os.kill(os.getpid(), signal.SIGKILL)


def _chain(*parts: Iterator | list) -> Iterator:
    for part in parts:
        yield from part


def _dead_letters(cfg: ProfileConfig, events: str | Path, dead: list) -> Iterator[tuple]:
    """DLQ records of the log's dead letters: the source names the log file and its line."""
    for line, _, reason, message, original in dead:
        raw = original.encode("utf-8", "surrogateescape") if isinstance(original, str) \
            else (original or b"")
        yield (cfg.kafka.topics.dlq, None, None,
               dead_letter(reason, message, raw, None, f"file:{events}", -1, line))


def _build(cfg: ProfileConfig, items: str | Path | None, events: str | Path,
           handover: HandOver, engine: str, workers: int | None, master: str,
           events_format: str | None, order_by: str | None, out: IO | None, spill_dir: str
           ) -> tuple[Built, Counter, list]:
    """(every user's Built, its records in spill files under `spill_dir`; the scan's counts;
    every dead letter with its original, in log order)."""
    phase = ProgressLines(out).phase("build", None, "users")
    built = Built()
    t0 = time.monotonic()

    def done(k: int, n: int | None, share: Built) -> None:
        share.spill_to(Path(spill_dir) / f"driver-{k}.bin")      # (Spark's come in memory)
        built.merge(share)
        spent = time.monotonic() - t0
        of = f" (share {k} of {n}, {spent / k * (n - k):,.0f} s left)" if n else \
            f" (share {k})"
        phase.tick(built.counts["users"], force=True,
                   extra=f", {built.counts['applied']:,} events applied{of}")

    common: dict[str, Any] = {"until": handover.until_ts, "events_format": events_format,
                              "order_by": order_by, "progress_stream": out,
                              "label": "bootstrap scan", "done": done}
    now_ms = int(time.time() * 1000)
    if engine == "spark":
        from offline import spark
        args: tuple = (handover, cfg.kafka.partitioner, now_ms)
        counts, dead, shares = spark.map_users(cfg, items, str(events), build_users, args,
                                               master=master, **common)
    else:
        from offline import local
        args = (handover, cfg.kafka.partitioner, now_ms, spill_dir)
        counts, dead, shares = local.map_users(cfg, items, events, build_users, args,
                                               workers=workers, **common)
    # (the shares' too-late dead letters got their originals after `done` saw them)
    dead = dead + [d for share in shares for d in share.dead]
    built.dead = []
    return built, counts, sorted(dead, key=lambda d: (d[0], d[1]))
