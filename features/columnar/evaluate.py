"""Features 106/107/108/110, confidence and the window metrics for many users in one call:
`FeatureEngine.evaluate` for each of them, value for value (tests/unit/features/test_columnar.py).

- 106: every (user, category) score is summed with an unbuffered `np.add.at` over the
  category entries in record order (user, day ascending, then k and action ascending), so each
  score gets the reference's additions in the reference's order; `decay ** age` comes from a
  table built with Python's `**`; scores are rounded as Python's `round` rounds them
  (`round6`; numpy's differs) and ranked by stable sorts over the user axis.
- 107/108/110: array comparisons of the window metrics (`features.columnar.aggregates`).
- confidence: a table built with `math.exp`, as the reference computes it.
- profiles: filled in bulk from flat lists (`_evaluate_stack`), each carrying its digest.
- extra features (features.extensions): each user's extractors called on their window metrics,
  computed for all users at once; their digests per user. The former per-user loop
  (`_evaluate_stack_reference`) is the reference the tests hold the fast path equal to
  (tests/unit/features/test_columnar_bulk.py).
"""
from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Sequence, Union, cast

import numpy as np

from features.columnar.aggregates import metric_dicts, window_arrays
from features.columnar.codec import decode
from features.columnar.layout import ColumnarState
from features.columnar.stack import Stack
from features.columnar.update import ColumnarUpdate
from features.profile import BASE, FeatureEngine, Profile, digest_of
from features.state import STATE_DAYS
from features.update import day_end

Record = Union[ColumnarState, bytes]
_NP_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
_CONFIDENCE_TABLE = 4096     # actions_30d below this read a table, above it math.exp


class Compiled:
    """What the vectorised evaluation needs of an engine, built once per engine."""

    def __init__(self, engine: FeatureEngine):
        cfg = engine.cfg
        self.codes = list(engine.action_names.values())
        it = cfg.interest_tags
        self.factor = np.array([it.decay_factor ** age for age in range(STATE_DAYS)])
        self.weight = np.ones(256)
        for code, weight in engine.weights.items():
            self.weight[code] = weight
        ks = [k for _, k, _ in engine.categories]
        self.kpos = np.full(max(ks, default=0) + 2, -1, dtype=np.int64)
        for pos, k, _ in engine.categories:
            self.kpos[k] = pos
        self.cat_ids = [106 * BASE + k for _, k, _ in engine.categories]
        self.cat_names = [name for _, _, name in engine.categories]
        self.rule_ids = [107 * BASE + k for _, k in engine.rule_ids]
        self.rule_names = [rule.name for rule, _ in engine.rule_ids]
        self.confidence = [round(1 - math.exp(-a / 20), 4) for a in range(_CONFIDENCE_TABLE)]
        self.confidence_np = np.array(self.confidence)
        # a rule reads a rate_<action> metric: the evaluation needs the per-action counts
        self.rates = any(rule.metric.startswith("rate_") for rule, _ in engine.rule_ids)
        self.cat_names_np = np.array(self.cat_names + [""], dtype=object)[:-1]
        # the digest cache's key packed into one int: (top position + 1) per tag slot, a bit
        # per rule, the level and the type (None when it does not fit in 62 bits)
        P = len(self.cat_ids)
        al = cfg.activity_levels
        bits = [max(1, P.bit_length())] * min(it.max_tags, P) + [1] * len(self.rule_ids) + \
            [max(1, (al.levels - 1).bit_length()), 1]
        self.key_bits: list[int] | None = bits if sum(bits) <= 62 else None
        # (106 positions, 107 rules, level, type) -> digest_of their arrays (changed_profiles)
        self.digests: dict[Any, int] = {}


_COMPILED: "weakref.WeakKeyDictionary[FeatureEngine, Compiled]" = weakref.WeakKeyDictionary()


def compiled(engine: FeatureEngine) -> Compiled:
    c = _COMPILED.get(engine)
    if c is None:
        c = _COMPILED[engine] = Compiled(engine)
    return c


_DIGESTS_KEPT = 100_000


def _cache_digest(digests: dict[Any, int], key: Any, digest: int) -> int:
    if len(digests) >= _DIGESTS_KEPT:
        digests.clear()
    digests[key] = digest
    return digest


def _codes(engine: FeatureEngine, with_metrics: bool) -> list[int]:
    """The action codes a stack for an evaluation needs: none unless a metric dict, an extra
    feature or a rule reads the `rate_<action>` metrics (the per-action day counts)."""
    comp = compiled(engine)
    return comp.codes if with_metrics or comp.rates or engine.extensions else []


def _decoded(states: Sequence[Record], tz: int) -> list[ColumnarState]:
    return [s if isinstance(s, ColumnarState) else decode(s, tz) for s in states]


def _as_of(st: Stack, as_of: Sequence[int] | np.ndarray | None,
           user_ids: Sequence[int]) -> np.ndarray:
    """Each stacked user's as-of time (the state's T by default); never before T."""
    if as_of is None:
        return st.T
    T = np.asarray(as_of, dtype=np.int64)[st.order]
    early = np.flatnonzero(T < st.T)
    if len(early):
        p = int(early[0])
        raise ValueError(f"as_of {int(T[p])} is before user {user_ids[st.order[p]]}'s T "
                         f"{int(st.T[p])}")
    return T


def evaluate_many(engine: FeatureEngine, user_ids: Sequence[int], states: Sequence[Record],
                  as_of: Sequence[int] | np.ndarray | None = None,
                  with_metrics: bool = True) -> list[Profile]:
    """`engine.evaluate(user_ids[u], states[u], as_of[u])` for every u, together. States are
    decoded v3 states or records of any format; as_of defaults to each state's T.
    with_metrics=False leaves `Profile.metrics` empty (a sixth of the time: a scheduled run
    needs only the arrays) unless extra features need them."""
    return cast("list[Profile]", _evaluate(engine, user_ids, states, as_of, with_metrics, False))


def changed_profiles(engine: FeatureEngine, user_ids: Sequence[int],
                     states: Sequence[Record],
                     as_of: Sequence[int] | np.ndarray | None = None) -> list[Profile | None]:
    """What a scheduled run needs: for each user, the profile (without metrics) if its arrays
    differ from the published ones (`digest() != state.published_digest`), else None. No
    Profile is built for an unchanged user."""
    return _evaluate(engine, user_ids, states, as_of, False, True)


def _evaluate(engine: FeatureEngine, user_ids: Sequence[int], states: Sequence[Record],
              as_of: Sequence[int] | np.ndarray | None, with_metrics: bool,
              changed_only: bool) -> list[Profile | None]:
    decoded = _decoded(states, engine.tz)
    st = Stack.from_states(decoded, engine.tz, _codes(engine, with_metrics))
    return _evaluate_stack(engine, user_ids, st, as_of, with_metrics, changed_only, decoded)[0]


def evaluate_stack(engine: FeatureEngine, user_ids: Sequence[int], st: Stack,
                   as_of: Sequence[int] | np.ndarray | None = None,
                   with_metrics: bool = True) -> list[Profile]:
    """`evaluate_many` of states already stacked (`features.columnar.logs.stack` builds them
    from event logs): user_ids[u] and as_of[u] belong to the stack's user `st.order == u`."""
    return cast("list[Profile]", _evaluate_stack(engine, user_ids, st, as_of, with_metrics,
                                                 False, None)[0])


# Profile's fields, in order: a profile is built by filling its __dict__ (what the frozen
# dataclass's __init__ does one object.__setattr__ at a time, at a third of the cost), with its
# digest (`Profile.digest` reads it)
_PROFILE_FIELDS = ("user_id", "as_of", "features", "interest_tags", "behavior_preferences",
                   "activity_level", "user_type", "confidence", "metrics")
assert tuple(f.name for f in dataclasses.fields(Profile)) == _PROFILE_FIELDS
assert not hasattr(Profile, "__post_init__") and not hasattr(Profile, "__slots__")


def _evaluate_stack(engine: FeatureEngine, user_ids: Sequence[int], st: Stack,
                    as_of: Sequence[int] | np.ndarray | None, with_metrics: bool,
                    changed_only: bool, decoded: list[ColumnarState] | None
                    ) -> tuple[list[Profile | None], list[int]]:
    """The profiles (by the caller's index; with changed_only, only where the digest differs
    from `decoded[u].published_digest`) and each user's digest.

    No Python work per (user, category) or per (user, rule): a user's 106 ids and names are
    slices of one flat list each, its 107 lists a copy of those of its combination of rules
    (built once per combination), its digest looked up in the engine's cache by what decides
    the arrays (top categories, rules that hold, level, type) or computed once."""
    tz = engine.tz
    comp = compiled(engine)
    T = _as_of(st, as_of, user_ids)
    today = (T + tz) // 86400
    extensions = engine.extensions
    arrays = window_arrays(st, today, engine.windows, tz, engine.gap, engine.action_names,
                           rates=with_metrics or comp.rates or bool(extensions))
    cfg = engine.cfg
    U = st.U
    top = _top_matrix(engine, comp, st, today)

    # 107: rules in config order, the first max_preferences that hold
    held = np.zeros((U, len(comp.rule_ids)), dtype=bool)
    for r, (rule, _) in enumerate(engine.rule_ids):
        m = arrays[rule.window_days]
        held[:, r] = (m["actions"] >= rule.min_actions) & \
            _NP_OPS[rule.op](m[rule.metric], rule.threshold)
    held &= np.cumsum(held, axis=1) <= cfg.behavior_preferences.max_preferences

    level, user_type = _level_and_type(cfg, arrays, U)

    # per user: 106 as a slice of one flat list of ids (and of names); 107 by the few
    # combinations of rules that hold; the digest by what decides the arrays (cached per engine)
    cat_ids_np = np.asarray(comp.cat_ids, dtype=np.int64)
    valid = top >= 0
    ntop = valid.sum(axis=1)
    bound = np.zeros(U + 1, dtype=np.int64)
    np.cumsum(ntop, out=bound[1:])
    flat_pos = top[valid]
    flat_ids = cat_ids_np[flat_pos].tolist()
    flat_names = comp.cat_names_np[flat_pos].tolist()
    rule_group, rule_first = _groups(held.astype(np.int64))
    rule_kinds = []
    for held_u in held[rule_first].tolist():
        rules = [r for r, h in enumerate(held_u) if h]
        rule_kinds.append(([comp.rule_ids[r] for r in rules] or [107 * BASE],
                           [comp.rule_names[r] for r in rules]))
    empty106 = 106 * BASE
    if extensions:
        # extra features: each user's extractors on their metrics (computed above for all
        # users at once), and the digest of all the arrays per user
        row_metrics = metric_dicts(arrays)
        extra = [{fid: x.values(m, engine) for fid, x in extensions.items()}
                 for m in row_metrics]
        digest = np.fromiter(
            (digest_of({"106": flat_ids[b0:b1] or [empty106], "107": rule_kinds[g][0],
                        "108": [108 * BASE + lv_r], "110": [110 * BASE + ty_r], **e})
             for b0, b1, g, lv_r, ty_r, e in zip(
                 bound[:-1].tolist(), bound[1:].tolist(), rule_group.tolist(), level.tolist(),
                 user_type.astype(np.int64).tolist(), extra)), dtype=np.int64, count=U)
    else:
        digest = _digests(comp, top, held, level, user_type, flat_ids, bound, rule_kinds,
                          rule_group)
    order = st.order
    by_caller = np.empty(U, dtype=np.int64)
    by_caller[order] = digest
    if changed_only:
        assert decoded is not None     # changed_only is asked with the decoded states
        published = np.fromiter([decoded[u].published_digest for u in order.tolist()],
                                dtype=np.int64, count=U)
        todo = np.flatnonzero(digest != published)
    else:
        todo = np.arange(U)

    a30 = arrays[30]["actions"][todo]
    confidence = comp.confidence_np[np.minimum(a30, _CONFIDENCE_TABLE - 1)].tolist()
    for i in np.flatnonzero(a30 >= _CONFIDENCE_TABLE).tolist():
        confidence[i] = round(1 - math.exp(-int(a30[i]) / 20), 4)
    if extensions:      # (their profiles carry the metrics, as the reference's do)
        metrics = [row_metrics[r] for r in todo.tolist()]
    elif with_metrics:
        metrics = metric_dicts({W: {k: v[todo] for k, v in m.items()}
                                for W, m in arrays.items()})
    else:
        metrics = [{} for _ in range(len(todo))]
    extras = [extra[r] for r in todo.tolist()] if extensions else [{}] * len(todo)
    lv = level[todo]
    ty = user_type[todo].astype(np.int64)
    out: list[Profile | None] = [None] * U
    new = object.__new__
    for u, t, b0, b1, g, lv_u, ty_u, f108, f110, conf, m_u, d, e in zip(
            order[todo].tolist(), T[todo].tolist(), bound[todo].tolist(),
            bound[todo + 1].tolist(), rule_group[todo].tolist(), lv.tolist(), ty.tolist(),
            (lv + 108 * BASE).tolist(), (ty + 110 * BASE).tolist(), confidence, metrics,
            digest[todo].tolist(), extras):
        f107, n107 = rule_kinds[g]
        p = new(Profile)
        p.__dict__.update({
            "user_id": user_ids[u], "as_of": t,
            "features": {"106": flat_ids[b0:b1] or [empty106], "107": f107[:], "108": [f108],
                         "110": [f110], **e},
            "interest_tags": flat_names[b0:b1], "behavior_preferences": n107[:],
            "activity_level": lv_u, "user_type": ty_u, "confidence": conf, "metrics": m_u,
            "_digest": d})
        out[u] = p
    return out, by_caller.tolist()


def _digests(comp: Compiled, top: np.ndarray, held: np.ndarray, level: np.ndarray,
             user_type: np.ndarray, flat_ids: list[int], bound: np.ndarray,
             rule_kinds: list[tuple[list[int], list[str]]], rule_group: np.ndarray
             ) -> np.ndarray:
    """[U] `digest_of` each user's arrays, looked up in the engine's cache by what decides
    them (top positions, rules that hold, level, type: packed into one int when it fits,
    else a tuple) or computed once."""
    keys = np.concatenate([top + 1, held, level[:, None], user_type[:, None]],
                          axis=1).astype(np.int64)
    U = len(keys)
    if not U:
        return np.zeros(0, dtype=np.int64)
    cache = comp.digests
    names: list[Any] = _pack(keys, comp.key_bits).tolist() if comp.key_bits is not None \
        else [tuple(k) for k in keys.tolist()]
    found = list(map(cache.get, names))
    if None in found:
        for u, (key, d) in enumerate(zip(names, found)):
            if d is not None:
                continue
            d = cache.get(key)
            if d is None:
                d = _cache_digest(cache, key, digest_of({
                    "106": flat_ids[bound[u]:bound[u + 1]] or [106 * BASE],
                    "107": rule_kinds[rule_group[u]][0],
                    "108": [108 * BASE + int(level[u])],
                    "110": [110 * BASE + int(user_type[u])]}))
            found[u] = d
    return np.asarray(found, dtype=np.int64)


def _pack(keys: np.ndarray, bits: list[int]) -> np.ndarray:
    """Each row of non-negative `keys` as one int64, column c in bits[c] bits."""
    code = np.zeros(len(keys), dtype=np.int64)
    for c, b in enumerate(bits):
        code <<= b
        code |= keys[:, c]
    return code


def _groups(keys: np.ndarray, bits: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of equal non-negative `keys` [U, k] as (group of each row, first row of each
    group): the columns packed into one int64 when their values fit (in `bits`, else in the
    bits their largest values need), else rows compared."""
    U = len(keys)
    if not U:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if bits is None:
        bits = [max(1, int(x).bit_length()) for x in keys.max(axis=0).tolist()]
    if sum(bits) <= 62:
        _, first, group = np.unique(_pack(keys, bits), return_index=True, return_inverse=True)
    else:
        _, first, group = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return group.reshape(-1), first


def round6(x: np.ndarray) -> np.ndarray:
    """`[round(v, 6) for v in x]` exactly (Python's round: the exact binary value rounded
    half to even at the 6th decimal, then the nearest double; numpy's `round` differs).

    y = x * 1e6 is within half an ulp of the exact product, so where y is more than 4 ulps
    away from any half-integer the exact product rounds to the same integer n as y does; then
    n / 1e6 (n < 2^52, both exact) is the double nearest to n * 10^-6, as Python's is. The
    rest (near a tie, huge or not finite) go through Python's round."""
    with np.errstate(over="ignore", invalid="ignore"):
        y = x * 1e6
        ay = np.abs(y)
        safe = (ay < 2.0 ** 50) & (np.abs(y - np.floor(y) - 0.5) > 4 * np.spacing(ay))
        out = np.rint(y) / 1e6
    rest = np.flatnonzero(~safe)
    if len(rest):
        out[rest] = [round(v, 6) for v in x[rest].tolist()]
    return out


def _top_matrix(engine: FeatureEngine, comp: Compiled, st: Stack,
                today: np.ndarray) -> np.ndarray:
    """[U, min(max_tags, categories)]: each user's top categories (config positions), best
    first, -1 after the last; `_interest_tags_reference` as a matrix."""
    it = engine.cfg.interest_tags
    P = len(comp.cat_ids)
    K = min(it.max_tags, P)
    score, counts = _category_totals(engine, comp, st, today)
    q = np.flatnonzero(counts >= it.min_frequency)
    rounded = round6(score[q])
    qu, qp = q // P, q % P
    # by user, then rounded score descending, then config position: q is ordered by (user,
    # position), so a stable sort by score and then a stable sort by user give that order
    order = np.argsort(-rounded, kind="stable")
    by_user = qu[order]
    if st.U <= np.iinfo(np.int16).max:
        by_user = by_user.astype(np.int16)     # (a stable sort of int16 is a radix sort)
    order = order[np.argsort(by_user, kind="stable")]
    qu, qp = qu[order], qp[order]
    rank = np.arange(len(qu)) - np.searchsorted(qu, qu, side="left")
    keep = rank < K
    top = np.full((st.U, K), -1, dtype=np.int64)
    top[qu[keep], rank[keep]] = qp[keep]
    return top


def _evaluate_stack_reference(engine: FeatureEngine, user_ids: Sequence[int], st: Stack,
                              as_of: Sequence[int] | np.ndarray | None, with_metrics: bool,
                              changed_only: bool, decoded: list[ColumnarState] | None
                              ) -> list[Profile | None]:
    """The former evaluation, a Python loop over the users (`_evaluate_stack` is its fast
    form): kept as the reference the tests hold the fast one equal to
    (tests/unit/features/test_columnar_bulk.py)."""
    tz = engine.tz
    comp = compiled(engine)
    T = _as_of(st, as_of, user_ids)
    today = (T + tz) // 86400
    arrays = window_arrays(st, today, engine.windows, tz, engine.gap, engine.action_names)
    cfg = engine.cfg
    U = st.U
    tags = _interest_tags_reference(engine, comp, st, today)

    # 107: rules in config order, the first max_preferences that hold
    held = np.zeros((U, len(comp.rule_ids)), dtype=bool)
    for r, (rule, _) in enumerate(engine.rule_ids):
        m = arrays[rule.window_days]
        held[:, r] = (m["actions"] >= rule.min_actions) & \
            _NP_OPS[rule.op](m[rule.metric], rule.threshold)
    held &= np.cumsum(held, axis=1) <= cfg.behavior_preferences.max_preferences
    prefs: list[list[int]] = [[] for _ in range(U)]
    for u, r in zip(*(a.tolist() for a in np.nonzero(held))):
        prefs[u].append(r)

    level, user_type = _level_and_type(cfg, arrays, U)

    table = comp.confidence
    confidence = [table[a] if a < _CONFIDENCE_TABLE else round(1 - math.exp(-a / 20), 4)
                  for a in arrays[30]["actions"].tolist()]
    extensions = engine.extensions
    metrics = metric_dicts(arrays) if with_metrics or extensions else [{} for _ in range(U)]
    cat_ids, cat_names = comp.cat_ids, comp.cat_names
    rule_ids, rule_names = comp.rule_ids, comp.rule_names
    empty106, empty107 = [106 * BASE], [107 * BASE]
    out: list[Profile | None] = [None] * U
    digests = comp.digests if changed_only and not extensions else None
    for u, t, lv, ty, conf, top, held_u, m_u in zip(
            st.order.tolist(), T.tolist(), level.tolist(), user_type.tolist(), confidence, tags,
            prefs, metrics):
        if digests is not None:
            assert decoded is not None     # changed_only is asked with the decoded states
            # the arrays' digest by what decides them: most users of a run share theirs
            key = (tuple(top), tuple(held_u), lv, ty)
            d = digests.get(key)
            if d is None:
                d = _cache_digest(digests, key, digest_of({
                    "106": [cat_ids[c] for c in top] or empty106[:],
                    "107": [rule_ids[r] for r in held_u] or empty107[:],
                    "108": [108 * BASE + lv], "110": [110 * BASE + int(ty)]}))
            if d == decoded[u].published_digest:
                continue
        features: dict[str, list[int]] = {
            "106": [cat_ids[c] for c in top] or empty106[:],
            "107": [rule_ids[r] for r in held_u] or empty107[:],
            "108": [108 * BASE + lv],
            "110": [110 * BASE + int(ty)]}
        for fid, extractor in extensions.items():
            features[fid] = extractor.values(m_u, engine)
        if changed_only and decoded is not None and \
                digest_of(features) == decoded[u].published_digest:
            continue
        out[u] = Profile(user_ids[u], t, features, [cat_names[c] for c in top],
                         [rule_names[r] for r in held_u], lv, int(ty), conf, m_u)
    return out


def _category_totals(engine: FeatureEngine, comp: Compiled, st: Stack,
                     today: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[U * P] decayed weighted scores and event counts of (user, configured category).
    `_category_totals_reference` with the age, its factor and the user's offset taken per
    day row (fewer than the entries), and no selection when every entry counts."""
    it = engine.cfg.interest_tags
    P = len(comp.cat_ids)
    row_age = today[st.row_user] - st.row_day
    row_factor = comp.factor[np.minimum(row_age, len(comp.factor) - 1)]
    row_in = row_age < it.window_days
    row = st.cat_row
    pos = comp.kpos[np.minimum(st.cat_key >> 8, len(comp.kpos) - 1)]
    ok = row_in[row] & (pos >= 0)
    key, count = st.cat_key, st.cat_count
    if not ok.all():
        sel = np.flatnonzero(ok)
        row, pos, key, count = row[sel], pos[sel], key[sel], count[sel]
    idx = (st.row_user * P)[row] + pos
    # weight * count * factor, left to right as the reference multiplies
    value = comp.weight[key & 255] * count.astype(np.float64) * row_factor[row]
    score = np.zeros(st.U * P)
    np.add.at(score, idx, value)            # unbuffered: in entry order, as the reference adds
    return score, np.bincount(idx, weights=count, minlength=st.U * P)


def _category_totals_reference(engine: FeatureEngine, comp: Compiled, st: Stack,
                               today: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[U * P] decayed weighted scores and event counts of (user, configured category)."""
    it = engine.cfg.interest_tags
    P = len(comp.cat_ids)
    cat_user = st.row_user[st.cat_row]
    age = today[cat_user] - st.row_day[st.cat_row]
    k = st.cat_key >> 8
    pos = comp.kpos[np.minimum(k, len(comp.kpos) - 1)]
    ok = np.flatnonzero((age < it.window_days) & (pos >= 0))
    idx = cat_user[ok] * P + pos[ok]
    count = st.cat_count[ok]
    # weight * count * factor, left to right as the reference multiplies
    value = comp.weight[st.cat_key[ok] & 255] * count.astype(np.float64) * comp.factor[age[ok]]
    score = np.zeros(st.U * P)
    np.add.at(score, idx, value)            # unbuffered: in entry order, as the reference adds
    return score, np.bincount(idx, weights=count, minlength=st.U * P)


def _interest_tags_reference(engine: FeatureEngine, comp: Compiled, st: Stack,
                             today: np.ndarray) -> list[list[int]]:
    """Per user, the config positions of its top categories, best first (the reference of
    `_top_matrix`: Python's round of each qualifying score, a list per user)."""
    it = engine.cfg.interest_tags
    P = len(comp.cat_ids)
    score, counts = _category_totals_reference(engine, comp, st, today)
    q = np.flatnonzero(counts >= it.min_frequency)
    rounded = np.array([round(x, 6) for x in score[q].tolist()])
    qu, qp = q // P, q % P
    order = np.lexsort((qp, -rounded, qu)) if len(q) else np.zeros(0, dtype=np.int64)
    qu, qp = qu[order], qp[order]
    first = np.searchsorted(qu, qu, side="left")
    keep = np.arange(len(qu)) - first < it.max_tags
    top: list[list[int]] = [[] for _ in range(st.U)]
    for u, p in zip(qu[keep].tolist(), qp[keep].tolist()):
        top[u].append(p)
    return top


def category_totals_many(engine: FeatureEngine, states: Sequence[Record],
                         as_of: Sequence[int] | np.ndarray) -> list[dict[int, tuple[float, int]]]:
    """`features.metrics.category_totals` (the interest-tag window, the engine's decay and
    weights) of each state, for its configured categories: k -> (score, count)."""
    comp = compiled(engine)
    st = Stack.from_states(_decoded(states, engine.tz), engine.tz, comp.codes)
    T = _as_of(st, as_of, list(range(st.U)))
    score, counts = _category_totals(engine, comp, st, (T + engine.tz) // 86400)
    P = len(comp.cat_ids)
    ks = [k for _, k, _ in engine.categories]
    out: list[dict[int, tuple[float, int]]] = [{}] * st.U
    for p, u in enumerate(st.order.tolist()):
        row = slice(p * P, (p + 1) * P)
        out[u] = {k: (x, int(n)) for k, x, n in zip(ks, score[row].tolist(),
                                                    counts[row].tolist()) if n}
    return out


def metrics_many(engine: FeatureEngine, states: Sequence[Record],
                 as_of: Sequence[int] | np.ndarray,
                 windows: Sequence[int]) -> list[dict[int, dict[str, Any]]]:
    """`engine.metrics_all(states[u], as_of[u], windows)` for every u, together."""
    tz = engine.tz
    comp = compiled(engine)
    st = Stack.from_states(_decoded(states, tz), tz, comp.codes)
    T = _as_of(st, as_of, list(range(st.U)))
    arrays = window_arrays(st, (T + tz) // 86400, windows, tz, engine.gap,
                           engine.action_names)
    out: list[dict[int, dict[str, Any]]] = [{}] * st.U
    for u, m in zip(st.order.tolist(), metric_dicts(arrays)):
        out[u] = m
    return out


def finish(engine: FeatureEngine, updates: Sequence[ColumnarUpdate],
           time_windows: Sequence[int], with_metrics: bool = True) -> None:
    """Evaluate the profiles and closed days of a batch's updates together: each update that
    wants a profile gets `profile` and `changed`; each closing snapshot becomes an entry of
    `closed_days` (its day's 1/7/30-day metrics as of the day's last second).
    with_metrics=False: profiles without `metrics` (the stream publishes only the arrays)."""
    want = [up for up in updates if up.wants_profile]
    if want:
        states = [up.state for up in want]
        st = Stack.from_states(states, engine.tz, _codes(engine, with_metrics))
        profiles, digests = _evaluate_stack(engine, [up.user_id for up in want], st, None,
                                            with_metrics, False, states)
        for up, p, d in zip(want, profiles, digests):
            up.profile = p
            up.changed = d != up.state.published_digest
    closing = [(up, day, snap) for up in updates for day, snap in up.closing]
    if closing:
        metrics = metrics_many(engine, [snap for _, _, snap in closing],
                               [day_end(day, engine.tz) for _, day, _ in closing],
                               time_windows)
        for (up, day, _), m in zip(closing, metrics):
            up.closed_days.append((day, m))
        for up in updates:
            up.closing.clear()


def _level_and_type(cfg: Any, arrays: Any, U: int) -> tuple[np.ndarray, np.ndarray]:
    """108 activity level and 110 user type (bool) of U users from their window arrays."""
    al = cfg.activity_levels
    m = arrays[al.window_days]
    daily = m["actions"] / al.window_days
    zero = np.zeros(U, dtype=np.int64)
    level_a = np.minimum(al.levels - 1, sum(((daily > t).astype(np.int64)
                                             for t in al.metrics.daily_actions), zero))
    level_s = np.minimum(al.levels - 1, sum(((m["avg_session_duration"] > t).astype(np.int64)
                                             for t in al.metrics.session_duration), zero))
    level = {"actions": level_a, "min": np.minimum(level_a, level_s),
             "max": np.maximum(level_a, level_s),
             "mean_floor": (level_a + level_s) // 2}[al.combine]
    ut = cfg.user_types
    m = arrays[ut.window_days]
    t1 = ut.criteria.type_1
    user_type = (m["sessions"] >= t1.min_sessions) & (m["actions"] >= t1.min_actions)
    return level, user_type
