"""The one seam into Faust's internals (streams/faust_compat): our copy of Faust's drain loop
is held against the original it was taken from, so a faust-streaming upgrade that changes the
original fails here, with the diff, instead of silently running an outdated copy."""
from __future__ import annotations

import pytest

from streams.faust_compat.drain import UpstreamChanged, check_upstream, stored_source
from streams.faust_compat.feed import ACK_COPY


def test_the_installed_faust_drain_loop_is_the_one_our_copy_was_taken_from():
    check_upstream()


def test_a_changed_original_fails_with_a_diff():
    changed = stored_source().replace("yield_every = 100", "yield_every = 10")
    with pytest.raises(UpstreamChanged) as info:
        check_upstream(stored=changed)
    assert "-        yield_every = 10\n" in str(info.value)
    assert "+        yield_every = 100\n" in str(info.value)


def test_the_installed_faust_ack_is_the_one_our_batch_ack_follows():
    from streams.faust_compat.feed import check_ack_upstream
    check_ack_upstream()
    changed = stored_source(ACK_COPY).replace("self._n_acked += 1", "self._n_acked += 2")
    with pytest.raises(UpstreamChanged, match="Consumer.ack"):
        check_ack_upstream(stored=changed)


def test_a_batch_ack_leaves_the_consumer_as_faust_acking_each_message_does():
    """Acked offsets (what Faust commits), the ack count, and nothing left in flight; offsets
    below the committed one or acked before (fetched twice after a seek) are not acked again."""
    import faust
    from faust.types import TP
    from faust.types.tuples import Message

    from streams.faust_compat import feed

    def consumer_after(acking):
        app = faust.App(f"t-ack-{acking}", broker="kafka://127.0.0.1:1", store="memory://")
        app.topics._acking_topics.add("ev")       # as subscribing an agent to it does
        c = app.consumer
        c._committed_offset[TP("ev", 1)] = 3
        c._acked[TP("ev", 0)].append(7)
        c._acked_index[TP("ev", 0)].add(7)
        msgs = [Message("ev", p, o, 0.0, None, None, b"k", b"v", None)
                for p, o in ((0, 5), (0, 6), (1, 2), (0, 7), (1, 4), (1, 4))]
        feed.track(app, msgs[:3])
        feed.track(app, msgs[3:])
        assert len(c._unacked_messages) == 2
        if acking == "faust":
            for m in msgs:
                c.ack(m)
            feed.untrack(app, msgs)
        else:
            feed.ack(app, msgs)
        return (dict(c._acked), dict(c._acked_index), c._n_acked, len(c._unacked_messages),
                [m.acked for m in msgs])
    ours, faust_ = consumer_after("batch"), consumer_after("faust")
    assert ours == faust_
    assert ours[0] == {TP("ev", 0): [7, 5, 6], TP("ev", 1): [4]} and ours[3] == 0
