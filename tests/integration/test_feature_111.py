"""Feature 111, added as docs/EXTENDING.md says (a config entry, one computation module, the
F·10^7 + k mapping), on the running system: every profile-updates record a worker publishes
carries it, the training-set row for (that user, that record's as_of) has the same arrays,
and each user's latest record equals `profiles batch` over the same events."""
from __future__ import annotations

import pytest

from tests.served_sample import serve_time_ordered_sample, training_mismatches
from tools.verify import batch_profiles

pytestmark = pytest.mark.integration

FEATURE_111 = {"extractor": "features.extras.session_frequency:session_frequency",
               "max_values": 1, "params": {"edges": [0, 2, 4]}, "windows": [7]}


def test_feature_111_stream_equals_batch_equals_training_set(broker, workers, tmp_path):
    cfg, items, events, published, _ = serve_time_ordered_sample(
        broker, workers, tmp_path, extra_features={"111": FEATURE_111})
    assert published and all(set(r["features"]) == {"106", "107", "108", "110", "111"}
                              for r in published)
    # the feature varies over the stream: more than one bucket is published
    values = {v for r in published for v in r["features"]["111"]}
    assert len(values) > 1 and all(1110000000 <= v <= 1110000003 for v in values), values

    # stream = training set, record by record
    mismatched = training_mismatches(cfg, items, events, published, tmp_path)
    assert not mismatched, mismatched[:5]

    # stream = batch: each user's latest record
    latest = {r["user_id"]: r for r in published}       # (in offset order: the last wins)
    batch = batch_profiles(cfg, items, events, tmp_path / "batch.jsonl")
    assert set(batch) == set(latest)
    differ = [(uid, batch[uid]["features"], latest[uid]["features"]) for uid in latest
              if batch[uid]["features"] != latest[uid]["features"]]
    assert not differ, differ[:5]
