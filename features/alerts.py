"""Alert rules over named signals: pending while the condition holds, firing once it has held
for `for` seconds, resolved when it stops. Pure: the caller supplies signals and the time."""
from __future__ import annotations

from dataclasses import dataclass

from features.config import COMPARE, AlertRule


@dataclass
class _State:
    pending_since: float | None = None
    firing: bool = False
    value: float | None = None
    since: float | None = None


class AlertEvaluator:
    def __init__(self, rules: list[AlertRule], source: str):
        self.rules = list(rules)
        self.source = source
        self._states = {r.name: _State() for r in self.rules}

    def evaluate(self, signals: dict[str, float | None], now: float) -> list[dict]:
        """Advance every rule; returns the firing/resolved transitions as alert records."""
        out = []
        for rule in self.rules:
            st = self._states[rule.name]
            value = signals.get(rule.metric)
            if value is None:
                continue                    # no reading: nothing changes
            st.value = value
            holds = COMPARE[rule.op](value, rule.threshold)
            if holds:
                if st.pending_since is None:
                    st.pending_since = now
                if not st.firing and now - st.pending_since >= rule.for_seconds:
                    st.firing, st.since = True, now
                    out.append(self._record(rule, "firing", value, now))
            else:
                st.pending_since = None
                if st.firing:
                    st.firing, st.since = False, now
                    out.append(self._record(rule, "resolved", value, now))
        return out

    def active(self) -> list[dict]:
        return [self._record(r, "firing", self._states[r.name].value, self._states[r.name].since)
                for r in self.rules if self._states[r.name].firing]

    def _record(self, rule: AlertRule, state: str, value: float | None, at: float | None) -> dict:
        return {"alert": rule.name, "state": state, "severity": rule.severity,
                "metric": rule.metric, "op": rule.op, "threshold": rule.threshold,
                "for_seconds": rule.for_seconds, "value": value, "source": self.source,
                "at": at}
