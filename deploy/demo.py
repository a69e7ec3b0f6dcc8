"""The demo behind `make run` / `make demo`: a local cluster, sample data replayed through it with
progress, the result checked against the batch path, and a few profiles shown."""
from __future__ import annotations

import time
from typing import Callable

from deploy.clients import latest_by_key, load_items, produce_events
from deploy.local import ClusterError, LocalCluster
from deploy.verify import batch_profiles, compare
from features.sample import SampleSpec, write_sample


def wait_processed(cluster: LocalCluster, total: int, timeout: float,
                   say: Callable[[str], None]) -> int:
    """Until the workers have taken in `total` events (applied or dead-lettered)."""
    deadline = time.monotonic() + timeout
    seen = last_said = 0
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
    cluster.start(instances)
    sample_dir = cfg.data_dir / "sample"
    say(f"writing sample data for {users:,} users over {days} days to {sample_dir}")
    info = write_sample(SampleSpec(users=users, days=days), sample_dir)
    items, events = sample_dir / "item_feat_dict.json", sample_dir / "events.jsonl"
    n_items, _ = load_items(cfg, items)
    say(f"published {n_items:,} items to {cfg.kafka.topics.item_features}")
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
    say(f"stream vs batch path: {c.summary()}")
    shown = [cluster.workers[0].get(f"/profiles/{uid}") for uid in sorted(published)[:8]]
    say("\n" + profile_table(shown) + "\n")
    say(f"query a profile: curl {cluster.workers[0].url}/profiles/{min(published)}")
    return c.ok
