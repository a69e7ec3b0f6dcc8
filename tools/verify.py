"""Compare what the stream published with the batch path on the same events (the exactness
check used by the end-to-end tests, the chaos run and `profiles verify`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from features.config import ProfileConfig
from reference.batch import run_batch

# What must agree. `as_of` and `confidence` of the latest record are as of the last change of the
# arrays (records are published only then, FEATURES.md §7), so they are not compared.
COMPARED = ("features", "interest_tags", "behavior_preferences", "activity_level", "user_type")


@dataclass
class Comparison:
    users: int = 0
    matched: int = 0
    mismatched: list[tuple[int, dict, dict]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)      # in batch, never published
    unexpected: list[int] = field(default_factory=list)   # published, not in batch

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unexpected)

    def summary(self) -> str:
        return (f"{self.users} users: {self.matched} match, {len(self.mismatched)} mismatched, "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")


def compare(published: dict[int, dict], expected: dict[int, dict]) -> Comparison:
    c = Comparison(users=len(expected))
    for uid, want in expected.items():
        got = published.get(uid)
        if got is None:
            c.missing.append(uid)
        elif all(got[k] == want[k] for k in COMPARED):
            c.matched += 1
        else:
            c.mismatched.append((uid, {k: got[k] for k in COMPARED},
                                 {k: want[k] for k in COMPARED}))
    c.unexpected = sorted(set(published) - set(expected))
    return c


def batch_profiles(cfg: ProfileConfig, items: str | Path | None, events: str | Path,
                   out: str | Path, as_of: int | None = None) -> dict[int, dict]:
    run_batch(cfg, items, events, out, as_of=as_of, progress_stream=None)
    recs = (orjson.loads(line) for line in Path(out).read_bytes().splitlines())
    return {r["user_id"]: r for r in recs}
