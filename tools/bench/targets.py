"""The fast path's targets (issue 25) against one `make bench` run: each figure as this run
measured it, its target, and whether it is met. Figures this run does not measure say so."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Target:
    figure: str
    target: str
    measured: float | None          # None: not in this run
    met: Callable[[float], bool]
    unit: str = "×"                 # how the figure reads: a ratio, or "ms"

    def line(self) -> str:
        if self.measured is None:
            return f"| {self.figure} | not in this run | {self.target} | - |"
        value = (f"{self.measured:,.0f}{' ' if self.unit == 'ms' else ''}{self.unit}"
                 if self.unit in ("ms", " events/s")
                 else f"{self.measured:.3f}{self.unit}" if self.measured < 1
                 else f"{self.measured:.2f}{self.unit}")
        return f"| {self.figure} | {value} | {self.target} | " \
               f"{'met' if self.met(self.measured) else 'missed'} |"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(targets: Sequence[Target]) -> list[str]:
    return ["| figure | this run | target | |", "|---|---:|---:|---|",
            *(t.line() for t in targets)]


def stream_targets(*, sparse_vs_quix: float | None, large_vs_kstreams: float | None,
                   sparse_vs_ceiling: float | None, sparse_vs_naive: float | None,
                   bench_vs_naive: float | None, p99_5k_ms: float | None,
                   p99_20k_ms: float | None) -> list[Target]:
    return [
        Target("sparse sample, 1 worker, vs quixstreams (from process start)", "≥ 3×",
               sparse_vs_quix, lambda v: v >= 3),
        Target("large sparse sample (25,000 users), 1 worker, vs Kafka Streams", "≥ 0.5×",
               large_vs_kstreams, lambda v: v >= 0.5),
        Target("sparse sample, 1 worker, vs read ceiling (A/C)", "≥ 0.2", sparse_vs_ceiling,
               lambda v: v >= 0.2, unit=""),
        Target("sparse sample, 1 worker, vs naive Faust (A/B)", "≥ 15×", sparse_vs_naive,
               lambda v: v >= 15),
        Target("bench sample, 1 worker, vs naive Faust (A/B)", "≥ 20×", bench_vs_naive,
               lambda v: v >= 20),
        Target("p99 event→publish at 5,000/s", "≤ 50 ms", p99_5k_ms, lambda v: v <= 50,
               unit="ms"),
        Target("p99 event→publish at 20,000/s", "≤ 100 ms", p99_20k_ms, lambda v: v <= 100,
               unit="ms"),
    ]


def scale_targets(*, batch_jsonl: float | None, batch_parquet: float | None,
                  daily_full_vs_daily: float | None,
                  spark_vs_local: float | None) -> list[Target]:
    return [
        Target("batch path, 2 cores, JSONL", "≥ 1,000,000", batch_jsonl,
               lambda v: v >= 1_000_000, unit=" events/s"),
        Target("batch path, 2 cores, Parquet", "≥ 2,000,000", batch_parquet,
               lambda v: v >= 2_000_000, unit=" events/s"),
        Target("`job daily --full`, 1,000,000 users, against the plain daily scan",
               "≤ 1.3×", daily_full_vs_daily, lambda v: v <= 1.3),
        Target("`batch --engine spark --master local[2]`, 4M events, against `--engine local`",
               "≥ 0.5", spark_vs_local, lambda v: v >= 0.5, unit=""),
    ]
