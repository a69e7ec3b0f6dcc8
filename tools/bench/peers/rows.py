"""`make bench`'s peer rows: our worker, quixstreams and Kafka Streams, one process each, on one
input topic, timed alike (tools.bench.peers.committed)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson

from tools.bench.peers import kstreams_command, quix_command
from tools.bench.peers.committed import GroupRun, output_of, time_group

OURS = "our worker"
QUIX = "quixstreams 3.28.1, at-least-once"
KSTREAMS = "Kafka Streams 4.1.1, at_least_once"


@dataclass
class PeerRows:
    title: str
    runs: list[GroupRun]
    ceiling_rate: float | None = None      # the read ceiling on the same input (events/s)
    agreement: str = ""                     # whether the peers' outputs agree

    def lines(self) -> list[str]:
        ours = next((r for r in self.runs if r.name == OURS), None)
        head = ["| one process | start-up s | events/s from start | events/s after start-up "
                "| CPU µs/event | peak RSS | ours vs it (from start) |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        rows = []
        for r in self.runs:
            vs = f"{ours.rate / r.rate:.2f}×" if ours and r is not ours else "-"
            rss = f"{r.peak_rss_mb:,.0f} MiB" if r.peak_rss_mb else "-"
            rows.append(f"| {r.name} | {r.joined:.1f} | {r.rate:,.0f} | "
                        f"{r.rate_after_start:,.0f} | {r.cpu_us:.1f} | {rss} | {vs} |")
        out = [self.title, "", *head, *rows]
        if self.agreement:
            out += ["", self.agreement]
        if ours and self.ceiling_rate:
            out += ["", f"Our worker against the read ceiling on the same input: "
                        f"{ours.rate / self.ceiling_rate:.3f} from its start, "
                        f"{ours.rate_after_start / self.ceiling_rate:.3f} after start-up."]
        return out


def run_peer_rows(title: str, bootstrap: str, topic: str, workdir: Path,
                  ours: tuple[list[str], str, dict[str, str] | None], say: Callable[[str], None],
                  ceiling_rate: float | None = None, cwd: Path | None = None) -> PeerRows:
    """Our worker (`ours`: its command, its group, extra environment), then quixstreams and
    Kafka Streams, each alone on `topic` (already filled), each with a group of its own."""
    cmd, group, env = ours
    runs = [time_group(OURS, [cmd], [workdir / "ours.log"], bootstrap, group, topic, say,
                       cwd=cwd, env=env)]
    say(f"  {workdir.name}: {runs[-1].name}: {runs[-1].rate:,.0f}/s from start")
    outs = []
    for name, kind, command in ((QUIX, "quix", quix_command),
                                (KSTREAMS, "kstreams", kstreams_command)):
        peer_group = f"peer-{kind}-{workdir.name}"     # (Kafka Streams: its application id)
        out = f"{peer_group}-out"
        outs.append(out)
        runs.append(time_group(name, [command(bootstrap, topic, out, peer_group,
                                              workdir / f"{kind}-state", say=say)],
                               [workdir / f"{kind}.log"], bootstrap, peer_group, topic, say,
                               out_topic=out))
        say(f"  {workdir.name}: {runs[-1].name}: {runs[-1].rate:,.0f}/s from start")
    return PeerRows(title, runs, ceiling_rate, compare_outputs(bootstrap, *outs))


def compare_outputs(bootstrap: str, quix_out: str, ks_out: str) -> str:
    """Whether the two peers did the same work: as many records out, and the same last record
    per user (both write the same JSON)."""
    nq, lq = output_of(bootstrap, quix_out)
    nk, lk = output_of(bootstrap, ks_out)
    parsed_q = {k: orjson.loads(v) for k, v in lq.items()}
    parsed_k = {k: orjson.loads(v) for k, v in lk.items()}
    differ = sum(1 for k in parsed_q.keys() | parsed_k.keys()
                 if parsed_q.get(k) != parsed_k.get(k))
    verdict = "agree" if nq == nk and differ == 0 else "DISAGREE"
    return (f"The peers' outputs {verdict}: quixstreams wrote {nq:,} records, Kafka Streams "
            f"{nk:,}; last record per user: {len(parsed_q):,} users, {differ:,} differ.")
