"""Train/serve parity on the running system: events in time order (timestamps distinct within
each user) through a live worker; for every profile-updates record it published, the
training-set row for (that user, that record's as_of) carries the same arrays, names, level,
type and confidence."""
from __future__ import annotations

import pytest

from tests.served_sample import serve_time_ordered_sample, training_mismatches

pytestmark = pytest.mark.integration


def test_every_published_record_equals_its_training_row(broker, workers, tmp_path):
    cfg, items, events, published, n_users = serve_time_ordered_sample(broker, workers,
                                                                       tmp_path)
    assert len(published) > 2 * n_users          # intermediate profiles too, not only the last
    assert {r["trigger"] for r in published} == {"event"}
    mismatched = training_mismatches(cfg, items, events, published, tmp_path)
    assert not mismatched, mismatched[:5]
