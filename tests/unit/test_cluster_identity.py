"""The worker's watch on the cluster id behind its broker address (streams.cluster_identity):
the first id it sees is the cluster; no answer is no news; another id is another cluster."""
from __future__ import annotations

from streams.cluster_identity import ClusterIdentityWatch


class _App:
    def task(self, fun):
        return fun


def test_another_cluster_id_is_a_change_and_no_answer_is_not():
    watch = ClusterIdentityWatch(_App(), cfg=None)
    assert not watch.changed(None)              # the broker did not answer: no news
    assert not watch.changed("A") and watch.first == "A"
    assert not watch.changed("A") and not watch.changed(None)
    assert watch.changed("B")
    assert watch.first == "A"                   # still compared with the first cluster
