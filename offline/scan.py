"""Phase 1 of the local engine on columns: input rows in, valid events as columns (`Rows`) and
dead letters out, with the stateless §6 checks of `EventParser`.

JSONL blocks take a vectorised path where it is certain to agree with the parser: the lines
that are one JSON object by their bytes are parsed by pyarrow's JSON reader (C++) against an
explicit schema into columns, and the §6 checks run on the columns. Every line the fast path
cannot judge with certainty goes through the exact per-line path (`EventParser.parse_line`),
so reasons and messages are the parser's own:

- a line that does not start with `{` and end with `}`, is over the size limit, holds a byte
  below 0x20, a backslash or a byte above 0x7F (escapes, non-ASCII text, invalid UTF-8), the
  words NaN or Infinity (which Arrow accepts and orjson refuses), an odd number of quotes, or
  brackets that do not balance outside strings (Arrow would read it as two rows, or join it
  with the next line);
- a block Arrow refuses: the row it names (a parse error), or both halves again (a value it
  cannot convert, e.g. a float user_id) down to a few lines;
- any row that fails any check, or holds a null where a field is required.

Parquet batches run the same checks on their columns (`scan_parquet`) when the columns are
of types the checks can judge; rows they do not pass, and whole batches of other column
types, take the exact path (`EventParser.check_line`). TAAC lines take the exact path, and so
does every JSONL line when pyarrow (the `spark` extra) is not installed.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, deque
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import methodcaller
from typing import Any, Iterable, Iterator

import numpy as np

from features.events import (
    MAX_DWELL_SECONDS,
    MAX_EVENT_BYTES,
    MAX_EVENT_ID_CHARS,
    MAX_TIMESTAMP,
    MS_THRESHOLD,
    Event,
    EventParser,
    Rejection,
)
from offline import OfflineError
from offline.batch_io import iter_events
from offline.formats import ROWS_PER_BATCH, original_text, require_pyarrow, row_object

_I64 = np.int64
COLUMNS = ("user", "order", "line", "sub", "ts", "item", "action", "dwell_ms", "eid_hash")
BLOCK_LINES = 4096             # lines per Arrow call (a call costs ~0.2 ms; a refused block
                               # is read again in parts)
CHECK_BLOCKS = 16              # blocks checked in one call (the checks cost ~40% more a
                               # line, called per block: measured)
LEAF_LINES = 8                 # a refused block this small goes line by line
MAX_DEPTH = 256                # lines with more brackets take the exact path (orjson reads
LONG_LINE = 200                # 1024 levels), as do lines with 200 digits in a row


def object_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class Gathered:
    """`base[idx]` of an object array, gathered only when asked: sorting a partition's events
    by user would otherwise touch every event-id string (about 180 ns an event on 4 million,
    measured), and the ids are read only for the few users the sequential path takes."""
    __slots__ = ("base", "idx")

    def __init__(self, base: np.ndarray, idx: np.ndarray):
        self.base, self.idx = base, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key):
        if isinstance(key, slice) or isinstance(key, np.ndarray):
            return Gathered(self.base, self.idx[key])
        return self.base[self.idx[key]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.base[self.idx]

    def tolist(self) -> list:
        return self.base[self.idx].tolist()


@dataclass
class Rows:
    """Valid events as columns, in log order (line, sub) unless said otherwise; dwell_ms and
    eid_hash -1 where absent; `order` is the order column's value (0 without one);
    event_id an object array of str | None."""
    cols: dict[str, np.ndarray]
    event_id: Any               # an object array or Gathered (a list is converted)

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, (np.ndarray, Gathered)):
            self.event_id = object_array(list(self.event_id))

    def __len__(self) -> int:
        return len(self.cols["ts"])

    @classmethod
    def empty(cls) -> "Rows":
        return cls({c: np.zeros(0, dtype=_I64) for c in COLUMNS}, object_array([]))

    def take(self, idx: np.ndarray, lazy_ids: bool = False) -> "Rows":
        """The rows at idx; lazy_ids: the event ids as a `Gathered` view."""
        ids = self.event_id      # (a Gathered one stays lazy: it composes the indices)
        ids = Gathered(ids, idx) if lazy_ids and isinstance(ids, np.ndarray) else ids[idx]
        return Rows({c: a[idx] for c, a in self.cols.items()}, ids)

    @classmethod
    def concat(cls, parts: list["Rows"]) -> "Rows":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls({c: np.concatenate([p.cols[c] for p in parts]) for c in COLUMNS},
                   np.concatenate([np.asarray(p.event_id) for p in parts]))

    @classmethod
    def of_events(cls, events: list[tuple[int, int | None, int, int, Event]]) -> "Rows":
        """Event rows (user_id, order, line, sub, event) of `check_events`."""
        if not events:
            return cls.empty()
        _, order, line, sub, evs = zip(*events)
        ids = [e.event_id for e in evs]
        return cls({
            "user": np.array([e.user_id for e in evs], dtype=_I64),
            "order": np.array([0 if o is None else o for o in order], dtype=_I64),
            "line": np.array(line, dtype=_I64),
            "sub": np.array(sub, dtype=_I64), "ts": np.array([e.ts for e in evs], dtype=_I64),
            "item": np.array([e.item_id for e in evs], dtype=_I64),
            "action": np.array([e.action for e in evs], dtype=_I64),
            "dwell_ms": np.array([-1 if e.dwell_ms is None else e.dwell_ms for e in evs],
                                 dtype=_I64),
            "eid_hash": hashes(ids)}, list(ids))


_HASH6 = partial(hashlib.blake2b, digest_size=6)
_DIGEST = methodcaller("digest")
_ENCODE = methodcaller("encode", "utf-8", "surrogatepass")
_EMPTY6 = hashlib.blake2b(digest_size=6)
_B2 = type(_EMPTY6)
HASH_BLOCK = 1024               # hash objects alive at once (more spill the cache)


def hashes_reference(ids) -> np.ndarray:
    """`features.state.event_id_hash` of each id (-1 for None), one blake2b call per id: the
    reference `hashes` is held equal to."""
    ids = np.asarray(ids, dtype=object)
    out = np.full(len(ids), -1, dtype=_I64)
    has = np.flatnonzero(ids != None)    # noqa: E711 (elementwise)
    if len(has):
        digests = b"".join(map(_DIGEST, map(_HASH6, map(_ENCODE, ids[has].tolist()))))
        out[has] = _digests_to_ints(digests, len(has))
    return out


def _digests_to_ints(digests: bytes, n: int) -> np.ndarray:
    wide = np.zeros((n, 8), dtype=np.uint8)
    wide[:, :6] = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 6)
    return wide.view("<u8").ravel().astype(_I64)


def digests6(data: list) -> bytes:
    """The 6-byte blake2b digests of byte strings, joined. Copying an empty hash object and
    updating it costs about half the constructor's keyword call (measured 340 against 620 ns
    an id), and chained C calls (map) run no bytecode per id."""
    out = []
    for a in range(0, len(data), HASH_BLOCK):
        part = data[a:a + HASH_BLOCK]
        hs = list(map(_B2.copy, repeat(_EMPTY6, len(part))))
        deque(map(_B2.update, hs, part), 0)
        out.append(b"".join(map(_B2.digest, hs)))
    return b"".join(out)


def hashes(ids, utf8: list | None = None) -> np.ndarray:
    """`hashes_reference`, faster: `utf8` may give the ids' UTF-8 bytes (None where the id is
    None), e.g. read from an Arrow string column, which saves encoding them here."""
    ids = np.asarray(ids, dtype=object)
    out = np.full(len(ids), -1, dtype=_I64)
    has = np.flatnonzero(ids != None)    # noqa: E711 (elementwise)
    if not len(has):
        return out
    if utf8 is None:
        data = list(map(_ENCODE, ids[has].tolist()))
    elif len(has) == len(ids):
        data = utf8
    else:
        data = [utf8[i] for i in has.tolist()]
    out[has] = _digests_to_ints(digests6(data), len(has))
    return out


# ---------------------------------------------------------------- the exact path

def numbered(rows: Iterable[tuple[int, bytes | dict]]) -> Iterator[tuple[int, int, bytes | dict]]:
    """(line, sub, raw): sub numbers the events of one line (a TAAC line holds several)."""
    prev_line, sub = None, 0
    for line, raw in rows:
        sub = sub + 1 if line == prev_line else 0
        prev_line = line
        yield line, sub, raw


def check_events(parser: EventParser, rows: Iterable[tuple[int, bytes | dict]], now: float,
                 as_of: int | None, order_by: str | None, counts: Counter
                 ) -> Iterator[tuple[bool, tuple]]:
    """The exact path, row by row: (True, (user_id, order, line, sub, event)) for each valid
    event at or before as_of (order: the order column's value, None without one), (False,
    dead letter) for each row the stateless §6 checks reject; counts events, rejections by
    reason and after_as_of."""
    for line, sub, raw in numbered(rows):
        counts["events"] += 1
        ev = parser.check_line(raw, now) if isinstance(raw, dict) else \
            parser.parse_line(raw, now)
        if isinstance(ev, Rejection):
            counts["rejected:" + ev.reason] += 1
            yield False, (line, sub, ev.reason, ev.message, original_text(raw))
            continue
        if as_of is not None and ev.ts > as_of:
            counts["after_as_of"] += 1
            continue
        order = None
        if order_by is not None:
            order = raw.get(order_by) if isinstance(raw, dict) else None
            if type(order) is not int:
                raise OfflineError(f"event at row {line} has {order_by}={order!r}: the order "
                                   "column must be an integer on every event")
        yield True, (ev.user_id, order, line, sub, ev)


def exact_rows(parser: EventParser, rows: Iterable[tuple[int, bytes | dict]], now: float,
               as_of: int | None, order_by: str | None, counts: Counter
               ) -> tuple[Rows, list]:
    """`check_events` over rows (line, raw), the valid events as Rows."""
    valid: list[tuple] = []
    dead: list[tuple] = []
    for ok, item in check_events(parser, rows, now, as_of, order_by, counts):
        (valid if ok else dead).append(item)
    return Rows.of_events(valid), dead


# ---------------------------------------------------------------- JSONL, vectorised

_ROW = re.compile(r"^JSON parse error: .* in row (\d+)$")
_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")
_LONG_DIGITS = re.compile(rb"[0-9]{200}")


def has_pyarrow() -> bool:
    """pyarrow comes with the `spark` extra; without it every line takes the exact path."""
    try:
        import pyarrow.json  # noqa: F401
    except ImportError:
        return False
    return True


def _schema():
    import pyarrow as pa
    return pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                      ("timestamp", pa.int64()), ("action_type", pa.int64()),
                      ("event_type", pa.string()), ("dwell_time", pa.float64()),
                      ("event_id", pa.string())])


def _lines(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each line of a block, as `bytes.split(b"\\n")` cuts it (the text after
    the last newline is a line only when not empty)."""
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1)).astype(_I64)
    ends = np.concatenate((nl, [len(arr)])).astype(_I64)
    if starts[-1] == len(arr):
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


def _one_object(data: bytes, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                nl: int) -> np.ndarray:
    """[lines] bool: the line is certainly one JSON object to Arrow if it parses at all, and
    the parser and Arrow read its bytes alike (see the module doc). `nl`: newlines in data.

    Lines that start with `{` and end with `}` cannot run into each other: after a `}` inside
    an open value JSON allows only `,` `]` `}`, never the next line's `{`. So a block of such
    lines that Arrow reads into as many rows as lines is one row per line."""
    length = ends - starts
    ok = (length >= 2) & (length <= MAX_EVENT_BYTES)
    nonempty = np.flatnonzero(length > 0)
    ok[nonempty] &= (arr[starts[nonempty]] == ord("{")) & (arr[ends[nonempty] - 1] == ord("}"))

    def unsure(at: np.ndarray) -> None:
        ok[np.searchsorted(starts, at, side="right") - 1] = False

    control = np.flatnonzero(arr < 0x20)
    if len(control) > nl:
        unsure(control[arr[control] != 10])
    if not data.isascii():
        unsure(np.flatnonzero(arr >= 0x80))
    for word in (b"\\", b"NaN", b"Infinity"):
        at = data.find(word)
        while at >= 0:
            unsure(np.array([at]))
            at = data.find(word, at + 1)
    # a number orjson reads as infinity (Arrow keeps an ignored field's digits as text): an
    # exponent of 3 or more digits after a digit, outside strings
    digit = (arr - np.uint8(ord("0"))) <= 9                    # uint8 wraps below "0"
    e = np.flatnonzero(digit[:-1] & ((arr[1:] | np.uint8(0x20)) == ord("e"))) + 1
    for at in e.tolist():
        m = _EXPONENT.match(data, at)
        if m:
            i = int(np.searchsorted(starts, at, side="right") - 1)
            if data.count(b'"', int(starts[i]), at) % 2 == 0:
                ok[i] = False
    # long lines: nesting deeper than orjson reads (1024), or an integer part of 200 digits
    for i in np.flatnonzero(ok & (length > LONG_LINE)).tolist():
        line = data[starts[i]:ends[i]]
        if line.count(b"{") + line.count(b"[") > MAX_DEPTH or _LONG_DIGITS.search(line):
            ok[i] = False
    return ok


def _arrow_blocks(data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray
                  ) -> tuple[list[tuple[int, int, Any]], list[int]]:
    """Parse the given lines of data with Arrow, BLOCK_LINES at a time: ([(a, b, table)] for
    lines[a:b] read, positions in `lines` Arrow refused)."""
    import pyarrow as pa
    import pyarrow.json as pj
    po = pj.ParseOptions(explicit_schema=_schema(), unexpected_field_behavior="ignore")
    view = memoryview(data)
    done: list[tuple[int, int, Any]] = []
    refused: list[int] = []
    n = len(lines)
    todo = [(a, min(a + BLOCK_LINES, n)) for a in range(0, n, BLOCK_LINES)]

    def again_in_halves(lo: int, hi: int) -> None:
        if hi - lo <= LEAF_LINES:
            refused.extend(range(lo, hi))
        else:
            todo.extend([(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)])

    while todo:
        lo, hi = todo.pop()
        if lo >= hi:
            continue
        block = pa.py_buffer(_joined(view, starts, ends, lines[lo:hi]))
        try:
            table = pj.read_json(block, read_options=pj.ReadOptions(
                use_threads=False, block_size=max(1 << 20, block.size + 1)), parse_options=po)
        except pa.ArrowInvalid as e:
            m = _ROW.match(str(e).strip())
            if m and int(m.group(1)) < hi - lo:
                r = lo + int(m.group(1))
                refused.append(r)
                todo += [(lo, r), (r + 1, hi)]
            else:                                 # a value it could not convert
                again_in_halves(lo, hi)
            continue
        if table.num_rows != hi - lo:             # two objects on a line
            again_in_halves(lo, hi)
            continue
        done.append((lo, hi, table))
    return done, refused


def _joined(view: memoryview, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray
            ) -> memoryview | bytes:
    """The lines joined by newlines: the data's own bytes when they are consecutive, else
    each run of consecutive lines copied whole."""
    if lines[-1] - lines[0] + 1 == len(lines):
        return view[starts[lines[0]]:ends[lines[-1]]]
    cut = np.flatnonzero(np.diff(lines) != 1) + 1
    first = lines[np.concatenate(([0], cut))]
    last = lines[np.concatenate((cut - 1, [len(lines) - 1]))]
    return b"\n".join([view[a:b] for a, b in zip(starts[first].tolist(), ends[last].tolist())])


def _checked(parser: EventParser, table, now: float, ascii_ids: bool = True
             ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The §6 stateless checks on an Arrow table of events (the columns of `_schema()`): (rows
    that pass, their columns with eid_hash, their event ids). A row passes only if EventParser
    would accept it as it stands. ascii_ids: the ids are ASCII (bytes = characters)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def col(name: str) -> tuple[np.ndarray, np.ndarray]:
        c = table.column(name)
        return np.asarray(c.is_valid()), c.fill_null(0).to_numpy()

    n = table.num_rows
    has_u, uid = col("user_id")
    has_i, iid = col("item_id")
    has_t, ts = col("timestamp")
    has_a, action = col("action_type")
    has_d, dwell = col("dwell_time")
    ok = has_u & has_i & has_t & (uid >= 0) & (iid >= 0) & (ts >= 0)
    etype = table.column("event_type").combine_chunks()     # one dictionary below
    has_e = np.asarray(etype.is_valid())
    ok &= has_a | has_e
    # timestamp: int seconds or milliseconds (FEATURES.md §1.1), then the range
    unit = parser.unit
    is_ms = np.full(n, unit == "ms") if unit != "auto" else ts >= int(MS_THRESHOLD)
    seconds = np.where(is_ms, ts // 1000, ts)
    ok &= seconds < MAX_TIMESTAMP
    ok &= ~has_d | ((dwell >= 0) & (dwell <= MAX_DWELL_SECONDS))     # NaN fails both
    eids = table.column("event_id").combine_chunks()
    has_id = np.asarray(eids.is_valid())
    lengths = (pc.binary_length(eids) if ascii_ids else pc.utf8_length(eids)
               ).fill_null(0).to_numpy()
    ok &= lengths <= MAX_EVENT_ID_CHARS
    codes = np.zeros(256, dtype=bool)
    codes[list(parser.action_codes)] = True
    known_a = (action >= 0) & (action < 256)
    known_a[known_a] = codes[action[known_a]]
    ok &= ~has_a | known_a
    mapped = np.full(n, -1, dtype=_I64)
    if has_e.any():
        enc = pc.dictionary_encode(etype)
        names = enc.dictionary.to_pylist()
        lut = np.array([parser.event_types.get(s, -1) for s in names] or [-1], dtype=_I64)
        ix = enc.indices.fill_null(0).to_numpy()
        mapped = np.where(has_e, lut[ix], -1)
        ok &= ~has_e | (mapped >= 0)
        ok &= ~(has_e & has_a) | (action == mapped)
    ok &= ~(seconds > now + parser.max_skew)
    keep = np.flatnonzero(ok)
    # round(dwell * 1000): the same IEEE product, rounded half to even as Python rounds
    dwell_ms = np.where(has_d[keep], np.rint(dwell[keep] * 1000), -1).astype(_I64)
    out = {"user": uid[keep].astype(_I64), "ts": seconds[keep].astype(_I64),
           "item": iid[keep].astype(_I64),
           "action": np.where(has_e, mapped, action)[keep].astype(_I64),
           "dwell_ms": dwell_ms}
    if has_id.any():
        kept = eids.take(keep)
        ids = object_array(kept.to_pylist())
        out["eid_hash"] = hashes(ids, kept.cast(pa.binary()).to_pylist())   # Arrow's UTF-8
    else:
        ids = np.full(len(keep), None, dtype=object)
        out["eid_hash"] = np.full(len(keep), -1, dtype=_I64)
    return keep, out, ids


def scan_jsonl(parser: EventParser, data: bytes, first_line: int, now: float,
               as_of: int | None, counts: Counter) -> tuple[Rows, list]:
    """A JSONL block (whole lines; the first is line `first_line`) to (valid events, dead
    letters): what `exact_rows` gives for its lines, computed on columns where certain."""
    arr = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _lines(arr)
    n = len(starts)
    fast = np.flatnonzero(_one_object(data, arr, starts, ends, n - (arr[-1:] != 10).sum()))\
        if n and has_pyarrow() else np.zeros(0, dtype=_I64)
    slow = np.ones(n, dtype=bool)
    parts: list[Rows] = []
    if len(fast):
        import pyarrow as pa
        done, _ = _arrow_blocks(data, starts, ends, fast)
        done.sort(key=lambda d: d[0])
        for g in range(0, len(done), CHECK_BLOCKS):
            group = done[g:g + CHECK_BLOCKS]
            table = pa.concat_tables([t for _, _, t in group])
            keep, cols, ids = _checked(parser, table, now)
            lines = np.concatenate([fast[lo:hi] for lo, hi, _ in group])[keep]
            slow[lines] = False
            if as_of is not None:
                late = cols["ts"] > as_of
                counts["after_as_of"] += int(late.sum())
                inside = np.flatnonzero(~late)
                cols = {c: a[inside] for c, a in cols.items()}
                ids = ids[inside]
                lines = lines[inside]
            counts["events"] += len(keep)
            m = len(lines)
            cols |= {"order": np.zeros(m, dtype=_I64), "line": lines + first_line,
                     "sub": np.zeros(m, dtype=_I64)}
            parts.append(Rows(cols, ids))
    dead: list = []
    slow_lines = np.flatnonzero(slow)
    if len(slow_lines):
        view = memoryview(data)
        raw = ((first_line + i, bytes(view[a:b])) for i, a, b in zip(
            slow_lines.tolist(), starts[slow_lines].tolist(), ends[slow_lines].tolist()))
        valid, dead = exact_rows(parser, iter_lines(raw), now, as_of, None, counts)
        parts.append(valid)
    return _in_line_order(parts), dead


def _in_line_order(parts: list[Rows]) -> Rows:
    """The parts' rows by (line, sub); the ids gathered lazily (phase 1 takes the rows again
    to split them by partition, and gathers the ids once there)."""
    rows = Rows.concat(parts)
    line = rows.cols["line"]
    if len(parts) > 1 and not (line[1:] > line[:-1]).all():
        rows = rows.take(np.lexsort((rows.cols["sub"], line)), lazy_ids=True)
    return rows


def iter_lines(numbered_lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes | dict]]:
    """`offline.batch_io.iter_events` over (line number, bytes) pairs that need not be
    consecutive (blank lines skipped, TAAC lines expanded)."""
    for lineno, line in numbered_lines:
        yield from iter_events(iter([line]), lineno)


# ---------------------------------------------------------------- Parquet, vectorised

def _safe_types():
    """Arrow types whose Python values the checks can judge on columns, per event field (a
    column of any other type sends its batch down the exact path)."""
    import pyarrow as pa
    ints = {pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
            pa.uint32()}
    text = {pa.string(), pa.large_string()}
    return {"user_id": ints, "item_id": ints, "timestamp": ints, "action_type": ints,
            "event_type": text, "dwell_time": ints | {pa.float32(), pa.float64()},
            "event_id": text}


def _event_table(batch, safe: dict):
    """The batch's event columns as `_schema()`'s types (a missing column all null), or None
    when a column's type is one the columns cannot judge or a name repeats."""
    import pyarrow as pa
    names = batch.schema.names
    if len(set(names)) != len(names):
        return None
    cols = []
    for f in _schema():
        if f.name not in names:
            cols.append(pa.nulls(batch.num_rows, f.type))
            continue
        c = batch.column(f.name)
        if c.type not in safe[f.name]:
            return None
        if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
            try:
                c.validate(full=True)            # valid UTF-8: the bytes are the str's
            except pa.ArrowInvalid:
                return None
        cols.append(c.cast(f.type))              # widening only: exact
    return pa.Table.from_arrays(cols, schema=_schema())


def _order_column(batch, order_by: str | None, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(order values, has a value) of the order column, or None when it cannot be judged on
    columns (absent, or not an integer type: the exact path stops the run as it would)."""
    import pyarrow as pa
    if order_by is None:
        return np.zeros(n, dtype=_I64), np.ones(n, dtype=bool)
    if order_by not in batch.schema.names or batch.schema.names.count(order_by) != 1:
        return None
    c = batch.column(order_by)
    if c.type not in (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(),
                      pa.uint32()):
        return None
    return c.cast(pa.int64()).fill_null(0).to_numpy(), np.asarray(c.is_valid())


def scan_parquet_batch(parser: EventParser, batch, first_line: int, now: float,
                       as_of: int | None, order_by: str | None, counts: Counter
                       ) -> tuple[Rows, list]:
    """Parquet rows (an Arrow record batch or table; the first is row `first_line`) to (valid
    events, dead letters): what `exact_rows` gives for `read_chunk`'s rows, on columns where
    certain. A row the columns do not pass (a null in a required field, any failed check, a
    null order) takes the exact path, and so does a batch with a column of another type."""
    n = batch.num_rows
    table = _event_table(batch, _safe_types())
    order = _order_column(batch, order_by, n)
    slow = np.ones(n, dtype=bool)
    parts: list[Rows] = []
    if n and table is not None and order is not None:
        keep, cols, ids = _checked(parser, table, now, ascii_ids=False)
        order_v, has_order = order
        sure = has_order[keep]              # a null order: the exact path stops the run
        keep, ids = keep[sure], ids[sure]
        cols = {c: a[sure] for c, a in cols.items()}
        slow[keep] = False
        counts["events"] += len(keep)
        lines = keep.astype(_I64)
        if as_of is not None:
            late = cols["ts"] > as_of
            counts["after_as_of"] += int(late.sum())
            inside = np.flatnonzero(~late)
            cols = {c: a[inside] for c, a in cols.items()}
            ids, lines = ids[inside], lines[inside]
        cols |= {"order": order_v[lines], "line": lines + first_line,
                 "sub": np.zeros(len(lines), dtype=_I64)}
        parts.append(Rows(cols, ids))
    dead: list = []
    slow_rows = np.flatnonzero(slow)
    if len(slow_rows):
        import pyarrow as pa
        picked = batch.take(pa.array(slow_rows))
        raw = zip((slow_rows + first_line).tolist(), map(row_object, picked.to_pylist()))
        valid, dead = exact_rows(parser, raw, now, as_of, order_by, counts)
        parts.append(valid)
    return _in_line_order(parts), dead


def scan_parquet(parser: EventParser, chunk, now: float, as_of: int | None,
                 order_by: str | None, counts: Counter) -> tuple[Rows, list]:
    """A Parquet chunk (offline.formats.Chunk) to (valid events, dead letters), batch by
    batch (`scan_parquet_batch`); every row by the exact path without pyarrow's compute."""
    pq = require_pyarrow()
    line = chunk.first_line
    rows: list[Rows] = []
    dead: list = []
    pf = pq.ParquetFile(chunk.path)
    for batch in pf.iter_batches(batch_size=ROWS_PER_BATCH, row_groups=list(chunk.row_groups)):
        r, d = scan_parquet_batch(parser, batch, line, now, as_of, order_by, counts)
        rows.append(r)
        dead += d
        line += batch.num_rows
    return Rows.concat(rows), dead
