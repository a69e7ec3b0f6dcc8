"""The one seam into Faust's internals (streams/faust_compat): our copy of Faust's drain loop
is held against the original it was taken from, so a faust-streaming upgrade that changes the
original fails here, with the diff, instead of silently running an outdated copy."""
from __future__ import annotations

import pytest

from streams.faust_compat.drain import UpstreamChanged, check_upstream, stored_source


def test_the_installed_faust_drain_loop_is_the_one_our_copy_was_taken_from():
    check_upstream()


def test_a_changed_original_fails_with_a_diff():
    changed = stored_source().replace("yield_every = 100", "yield_every = 10")
    with pytest.raises(UpstreamChanged) as info:
        check_upstream(stored=changed)
    assert "-        yield_every = 10\n" in str(info.value)
    assert "+        yield_every = 100\n" in str(info.value)
