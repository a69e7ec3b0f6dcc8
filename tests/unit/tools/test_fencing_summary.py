"""tools.bench.fencing: the pure parts (log counts, aborted records, medians, the table)."""
from __future__ import annotations

from tools.bench.fencing import FencingRun, aborted, count_log_lines, median_of, mode_table


def test_count_log_lines_counts_each_pattern_once_a_line():
    text = ("x restarting in place: delivering a checkpoint failed (y)\n"
            "streams.io.transactions.TransactionAborted: offsets of an old generation\n"
            "    raise TransactionAborted(str(err)) from e\n"
            "w outputs dropped until it rejoins\n")
    assert count_log_lines(text) == {"restarts_in_place": 1, "delivery_failures": 1,
                                     "txn_aborted": 1, "txn_fenced": 0, "fence_lines": 1}


def test_aborted_are_the_uncommitted_only_records_split_at_the_freeze():
    seen = {(0, 1), (0, 5), (0, 6), (1, 2), (1, 9)}
    committed = {(0, 6), (1, 2)}
    assert aborted(seen, committed, {0: 3, 1: 10}) == (3, 1)


def test_median_skips_failed_runs_and_missing_values():
    runs = [FencingRun("on", 1, open_at_freeze=True, back_seconds=2.0, exact=True),
            FencingRun("on", 2, open_at_freeze=True, back_seconds=4.0, exact=False),
            FencingRun("on", 3, back_seconds=None, exact=True),
            FencingRun("on", 4, back_seconds=100.0, error="TimeoutError: x")]
    m = median_of(runs)
    assert m["back_seconds"] == 3.0
    assert m["exact"] == "2/3" and m["open_at_freeze"] == "2/3"
    assert m["failed"] == 1 and m["runs"] == 4
    table = mode_table("on", runs)
    assert table[0] == "PROFILES_FENCING=on (worker A), frozen with transactions open"
    assert table[-1].startswith("| median | 2/3 |")
    assert any(line.startswith("| 4 | failed: TimeoutError") for line in table)
