"""The demo behind `make run` / `make demo`: a local cluster, sample data replayed through it with
progress, the result checked against the batch path, and a few profiles shown."""
from __future__ import annotations

import time
from typing import Callable, cast

from deploy.clients import latest_by_key, load_items, produce_events
from deploy.local_cluster import ClusterError, LocalCluster
from tools.data.sample import SampleSpec, write_sample
from tools.verify import Comparison, batch_profiles, compare


def wait_processed(cluster: LocalCluster, total: int, timeout: float,
                   say: Callable[[str], None]) -> int:
    """Until the workers have taken in `total` events (applied or dead-lettered)."""
    deadline = time.monotonic() + timeout
    seen = 0
    last_said: float = 0
    while time.monotonic() < deadline:
        seen = sum(w.get("/stats")["counts"].get("events_in", 0) for w in cluster.workers)
        if seen >= total:
            break
        if time.monotonic() - last_said >= 2:
            say(f"processed {seen:,} of {total:,} events")
            last_said = time.monotonic()
        time.sleep(0.5)
    say(f"processed {seen:,} of {total:,} events")
    return seen


def wait_catalog(cluster: LocalCluster, n_items: int, timeout: float) -> None:
    """Until every worker holds the whole item catalog: the workers follow `item-features` while
    they consume events, and an event's categories are those of the items known when it is
    applied (FEATURES.md §1.2), so events produced before a worker has read the catalog would
    be filed without categories, and the comparison with the batch path would fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.get("/stats")["items"] >= n_items for w in cluster.workers):
            return
        time.sleep(0.2)
    raise ClusterError(f"the workers did not read the {n_items:,} items in {timeout:.0f} s")


def profile_table(records: list[dict]) -> str:
    rows = [("user", "interest tags (106)", "preferences (107)", "level", "type", "conf.")]
    for r in records:
        rows.append((str(r["user_id"]), ", ".join(r["interest_tags"]) or "-",
                     ", ".join(r["behavior_preferences"]) or "-", str(r["activity_level"]),
                     str(r["user_type"]), f"{r['confidence']:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def run_demo(cluster: LocalCluster, users: int, days: int, instances: int,
             say: Callable[[str], None], timeout: float = 600) -> bool:
    """Returns True when every user's published profile equals the batch path's."""
    cfg = cluster.cfg
    cluster.start(instances, fresh=True)
    sample_dir = cfg.data_dir / "sample"
    say(f"writing sample data for {users:,} users over {days} days to {sample_dir}")
    info = write_sample(SampleSpec(users=users, days=days), sample_dir)
    items, events = sample_dir / "item_feat_dict.json", sample_dir / "events.jsonl"
    n_items, _ = load_items(cfg, items)
    say(f"published {n_items:,} items to {cfg.kafka.topics.item_features}")
    wait_catalog(cluster, n_items, timeout)
    n, eps = produce_events(cfg, events)
    say(f"produced {n:,} events to {cfg.kafka.topics.user_events} ({eps:,.0f}/s)")
    if wait_processed(cluster, info["events"], timeout, say) < info["events"]:
        raise ClusterError("the workers did not process every event in time")
    expected = batch_profiles(cfg, items, events, sample_dir / "batch-profiles.jsonl")
    published, c = {}, None
    for _ in range(10):    # the last publishes may still be in flight
        published = {int(k): v for k, v in
                     latest_by_key(cfg, cfg.kafka.topics.profile_updates, 2.0).items()}
        c = compare(published, expected)
        if c.ok:
            break
    c = cast(Comparison, c)             # the loop ran
    say(f"stream vs batch path: {c.summary()}")
    shown = [cluster.workers[0].get(f"/profiles/{uid}") for uid in sorted(published)[:8]]
    say("\n" + profile_table(shown) + "\n")
    say(f"query a profile: curl {cluster.workers[0].url()}/profiles/{min(published)}")
    return c.ok
