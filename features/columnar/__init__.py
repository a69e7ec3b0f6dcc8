"""The columnar feature core: user states as fixed-width arrays (the v3 record,
`features.columnar.layout`), events applied in place, many users evaluated in one call.

Every function here equals a reference one value for value (tests/unit/features/test_columnar.py):

    codec.decode / encode           features.encoding.decode / encode (format 4 only)
    codec.from_reference / to_reference    conversions to and from features.state.UserState
    update.apply / check            features.state.apply / check
    update.apply_events             features.update.apply_events, without the evaluation
    evaluate.evaluate_many          FeatureEngine.evaluate for many users
    evaluate.changed_profiles       the same, only for users whose arrays changed (scheduled runs)
    evaluate.metrics_many           FeatureEngine.metrics_all for many users (the aggregates)
    evaluate.finish                 the evaluation half of apply_events, for a whole batch
    schedule.*                      features.schedule, the state summary, the drift view
"""
from features.columnar.codec import decode, encode, from_reference, has_data, to_reference
from features.columnar.evaluate import changed_profiles, evaluate_many, finish, metrics_many
from features.columnar.layout import FORMAT, ColumnarState
from features.columnar.schedule import (
                                        is_idle,
                                        next_change_day,
                                        next_change_days,
                                        open_day,
                                        retire,
                                        state_summary,
                                        window_view,
)
from features.columnar.update import ColumnarUpdate, apply, apply_events, check

__all__ = ["FORMAT", "ColumnarState", "ColumnarUpdate", "apply", "apply_events",
           "changed_profiles", "check", "decode", "encode", "evaluate_many", "finish",
           "from_reference", "has_data", "is_idle", "metrics_many", "next_change_day",
           "next_change_days", "open_day", "retire", "state_summary", "to_reference", "window_view"]
