"""`profiles`: the one console command. Each module of this package is one group of commands;
a command only parses its arguments and calls the module that does the work."""
from __future__ import annotations

import faulthandler
import signal
import sys
from pathlib import Path

import click

from deploy import broker as embedded
from deploy.cli import backup, bootstrap, clients, cluster, config, jobs, offline, tools, worker
from deploy.cli.common import load as _load
from deploy.cli.common import say as _say
from tools.bench.report_file import FINDINGS_HEADING, replace_section, write_table
from tools.chaos.faults import FAULT_KINDS


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="PROFILES_CONFIG", default=None,
              help="profile_config.yaml to use (default: $PROFILES_CONFIG or "
                   "./profile_config.yaml).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Streaming user profiles: features 106/107/108/110 kept up to date from Kafka."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    # every Kafka client of the command finds the broker again after a restart
    from streams.faust_compat.aiokafka_calls import install_rebootstrap
    install_rebootstrap()


for _group in (config, worker, clients, offline, bootstrap, cluster, jobs, backup, tools):
    for _command in _group.COMMANDS:
        cli.add_command(_command)


# ---------------------------------------------------------------- embedded broker

@cli.group()
def broker() -> None:
    """The embedded Apache Kafka broker for local runs (one KRaft node on 127.0.0.1, its data in
    embedded_broker.run_dir)."""


@broker.command("install")
def broker_install() -> None:
    """Check the Java version, resolve the broker's jars through Maven and make the class archive
    that shortens its starts (once; `make install` runs it)."""
    try:
        java = embedded.checked_java()
        dist = embedded.resolve(say=click.echo)
        if not embedded.warm_start.archive_path(dist).is_file():
            click.echo("making the broker's class archive (one start and stop) ...")
        archive = embedded.make_class_archive(dist)
    except embedded.BrokerError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"embedded broker: Apache Kafka {dist.version} in {dist.libs} (java: {java}; "
               f"class archive: {archive or 'none, the JVM wrote none'})")


@broker.command("start")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default: config).")
@click.pass_context
def broker_start(ctx: click.Context, port: int | None) -> None:
    cfg = _load(ctx)
    port = port or cfg.embedded_broker.port
    try:
        st, started = embedded.start(cfg.run_dir, port, cfg.embedded_broker.start_timeout_seconds)
    except embedded.BrokerError as e:
        raise click.ClickException(str(e)) from None
    click.echo(st.describe("started" if started else "already running"))


@broker.command("stop")
@click.pass_context
def broker_stop(ctx: click.Context) -> None:
    """A controlled shutdown; the data stays in the run dir for the next start."""
    cfg = _load(ctx)
    if embedded.stop(cfg.run_dir):
        click.echo("embedded broker stopped")
    else:
        click.echo("embedded broker: not running")


@broker.command("status")
@click.pass_context
def broker_status(ctx: click.Context) -> None:
    """Exit 0 when running, 3 when not."""
    st = embedded.status(_load(ctx).run_dir)
    click.echo(st.describe())
    sys.exit(0 if st.running else 3)


# `profiles bench --only X`: the row groups of tools.bench.suite.run_bench it runs
BENCH_GROUPS = {"offline": ("offline",), "stream": ("bench", "sparse"), "bench": ("bench",),
                "sparse": ("sparse",), "peers-large": ("peers-large",),
                "producers": ("producers",), "latency": ("latency",), "scale": ("scale",),
                "guarantees": ("guarantees",)}


@cli.command()
@click.option("--users", type=click.IntRange(10), default=1000, show_default=True)
@click.option("--days", type=click.IntRange(1, 365), default=30, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="run/bench",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="BENCHMARKS.md",
              show_default=True, help="Where the table is written.")
@click.option("--tuned-batch", type=click.IntRange(1), default=5000, show_default=True,
              help="Batch size of the extra one-worker row.")
@click.option("--latency-rate", type=click.FloatRange(1), default=5000, show_default=True,
              help="Events/s offered in the latency run.")
@click.option("--latency-seconds", type=click.FloatRange(0), default=60, show_default=True,
              help="Length of the latency run (0: skip it).")
@click.option("--soak-rate", type=click.FloatRange(1), default=5000, show_default=True,
              help="Events/s offered in the soak run (RSS over time).")
@click.option("--soak-seconds", type=click.FloatRange(0), default=600, show_default=True,
              help="Length of the soak run (0: skip it).")
@click.option("--high-latency-rate", type=click.FloatRange(1), default=20000,
              show_default=True, help="Events/s offered in the second latency run.")
@click.option("--sparse-users", type=click.IntRange(100), default=5000, show_default=True,
              help="Users of the sparse sample (each batch mostly distinct users).")
@click.option("--large-peer-users", type=click.IntRange(100), default=25000, show_default=True,
              help="Users of the large sparse sample the peers run on (about 80 events each).")
@click.option("--only", type=click.Choice(list(BENCH_GROUPS)), default=None,
              help="Run some rows alone: offline (batch and training-set on every engine; "
                   "replaces that section of OUT), stream (throughput on the bench and the "
                   "sparse sample, with the peers), bench, sparse, peers-large (the peers on "
                   "the large sparse sample), producers (CPU per record of the output "
                   "producers), latency (the steady runs), guarantees (at_least_once against "
                   "exactly_once_v2 at three commit intervals), scale (the batch path, Spark "
                   "and the scheduled runs at the scale of issue 25's targets). A partial stream "
                   "run prints its table and writes it to WORKDIR/partial.md, not OUT.")
def bench(users: int, days: int, workdir: str, out: str, tuned_batch: int, latency_rate: float,
          latency_seconds: float, soak_rate: float, soak_seconds: float,
          high_latency_rate: float, sparse_users: int, large_peer_users: int,
          only: str | None) -> None:
    """Side-by-side on one embedded broker: our pipeline (1 and 2 workers, and 1 with a larger
    batch), naive Faust, the read ceiling, on the bench sample and (one worker) on a sparse
    sample, where quixstreams and Kafka Streams run too, as on a larger sparse sample; the batch
    path; then latency at two steady rates and RSS over a soak run; then the offline engines.
    Prints the table and writes OUT."""
    import shutil
    if only == "offline":
        from tools.bench.suite import run_offline_only
        shutil.rmtree(workdir, ignore_errors=True)
        section = run_offline_only(Path(workdir), users, days, say=_say)
        replace_section(Path(out), section, before=FINDINGS_HEADING)
        click.echo("\n" + section)
        click.echo(f"written to {out}")
        return

    from tools.bench.suite import run_bench
    shutil.rmtree(workdir, ignore_errors=True)
    table = run_bench(Path(workdir), users, days, say=_say, tuned_batch=tuned_batch,
                      latency_rate=latency_rate, latency_seconds=latency_seconds,
                      soak_rate=soak_rate, soak_seconds=soak_seconds,
                      high_latency_rate=high_latency_rate, sparse_users=sparse_users,
                      large_peer_users=large_peer_users,
                      **({"rows": BENCH_GROUPS[only]} if only else {}))
    if only:
        partial = Path(workdir) / "partial.md"
        partial.write_text(table)
        click.echo("\n" + table)
        click.echo(f"written to {partial} (a partial run: {out} is left as it is)")
        return
    write_table(Path(out), table)
    click.echo("\n" + table)
    click.echo(f"written to {out}")


@cli.command()
@click.option("--users", type=click.IntRange(100), default=6000, show_default=True,
              help="Sample users (6,000 give about 230,000 events).")
@click.option("--seed", type=int, default=42, show_default=True,
              help="The first run's seed (the sample and the fault schedule).")
@click.option("--runs", type=click.IntRange(1), default=1, show_default=True,
              help="Seeded runs one after another: SEED, SEED+1, ...")
@click.option("--hostile", type=click.IntRange(0), default=5000, show_default=True,
              help="Hostile payloads in the burst.")
@click.option("--kills", type=click.IntRange(0), default=5, show_default=True)
@click.option("--skip", multiple=True, type=click.Choice(FAULT_KINDS),
              help="Leave a kind of fault out (repeatable).")
@click.option("--standby", type=click.IntRange(0, 1), default=0, show_default=True,
              help="The workers' standby replicas (worker.standby_replicas).")
@click.option("--guarantee", type=click.Choice(["at_least_once", "exactly_once_v2"]),
              default="exactly_once_v2", show_default=True,
              help="The workers' kafka.processing_guarantee; under exactly_once_v2 a "
                   "read_committed reader must see no stale publish either.")
@click.option("--workdir", type=click.Path(file_okay=False), default="run/chaos",
              show_default=True, help="Each run keeps its logs in seed-N/ there.")
def chaos(users: int, seed: int, runs: int, hostile: int, kills: int, skip: tuple[str, ...],
          standby: int, guarantee: str, workdir: str) -> None:
    """Sample events through 3 workers under a seeded fault schedule (worker and broker
    faults); then profiles and states against the batch path. Exit 0 only when every run's
    mismatches, lost and double-applied events, users without state and worker exits are 0
    (under exactly_once_v2, and the stale publishes a read_committed reader sees)."""
    import shutil

    from tools.chaos.run import run_chaos, runs_table
    shutil.rmtree(workdir, ignore_errors=True)
    reports = []
    for s in range(seed, seed + runs):
        report = run_chaos(Path(workdir) / f"seed-{s}", users, s, hostile, say=_say,
                           kills=kills, skip=skip, standby=standby, guarantee=guarantee)
        for line in report.lines():
            click.echo(line)
        reports.append(report)
    if runs > 1:
        click.echo("")
        for line in runs_table(reports):
            click.echo(line)
    if not all(r.ok for r in reports):
        sys.exit(1)


@cli.command("bench-jobs")
@click.option("--users", type=click.IntRange(1000), default=1_000_000, show_default=True)
@click.option("--due", type=click.IntRange(0), default=10_000, show_default=True)
@click.option("--full-daily", is_flag=True, help="Also time a daily run that re-evaluates "
              "every user (the run after a feature config change).")
@click.option("--workdir", type=click.Path(file_okay=False), default="run/bench-jobs",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="BENCHMARKS.md",
              show_default=True, help="Its section there is replaced.")
def bench_jobs(users: int, due: int, full_daily: bool, workdir: str, out: str) -> None:
    """Time the hourly and daily runs of one worker holding USERS states, DUE of them due."""
    import shutil

    from tools.bench.jobs import run_bench_jobs
    shutil.rmtree(workdir, ignore_errors=True)
    section = run_bench_jobs(Path(workdir), users, due, full_daily, say=_say)
    replace_section(Path(out), section)
    click.echo("\n" + section)
    click.echo(f"written to {out}")


@cli.command("bench-failover")
@click.option("--users", "users_list", type=click.IntRange(1000), multiple=True,
              default=[100_000], show_default=True, help="Users in state (repeatable).")
@click.option("--standby", "standbys", type=click.IntRange(0, 1), multiple=True,
              default=[0, 1], show_default=True, help="Standby replicas (repeatable).")
@click.option("--workdir", type=click.Path(file_okay=False), default="run/bench-failover",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="BENCHMARKS.md",
              show_default=True, help="Its section there is replaced.")
def bench_failover(users_list: tuple[int, ...], standbys: tuple[int, ...], workdir: str,
                   out: str) -> None:
    """Seconds from a worker's SIGKILL until its partitions are served again, and the restore
    rate, for each USERS in state, with and without standby copies."""
    import shutil

    from features.config import load_config
    from tools.bench.failover import run_failover, section
    rows = []
    for users in users_list:
        for standby in standbys:
            d = Path(workdir) / f"{users}-{standby}"
            shutil.rmtree(d, ignore_errors=True)
            rows.append(run_failover(d, users, standby, say=_say))
    timeout = load_config(Path(workdir) / f"{users_list[0]}-{standbys[0]}" / "failover.yaml"
                          ).kafka.client.session_timeout_seconds
    text = section(rows, timeout)
    replace_section(Path(out), text)
    click.echo("\n" + text)
    click.echo(f"written to {out}")


@cli.command("bench-bootstrap")
@click.option("--users", type=click.IntRange(1000), default=1_000_000, show_default=True)
@click.option("--engine", "engines", type=click.Choice(["local", "spark"]), multiple=True,
              default=["local", "spark"], show_default=True)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
              help="Local engine: worker processes.")
@click.option("--master", default="local[2]", show_default=True, help="Spark master.")
@click.option("--workdir", type=click.Path(file_okay=False), default="run/bench-bootstrap",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="BENCHMARKS.md",
              show_default=True, help="Its section there is replaced.")
def bench_bootstrap(users: int, engines: tuple[str, ...], workers: int, master: str,
                    workdir: str, out: str) -> None:
    """Users and events bootstrapped per second, local engine and Spark."""
    import shutil

    from tools.bench.bootstrap import run_bootstrap_bench, section
    shutil.rmtree(workdir, ignore_errors=True)
    rows = run_bootstrap_bench(Path(workdir), users, list(engines), workers, master, say=_say)
    text = section(rows, workers, master)
    replace_section(Path(out), text)
    click.echo("\n" + text)
    click.echo(f"written to {out}")


SEED_ACTIONS = {"deploy", "status", "health", "restart", "stop"}


def seed_form(argv: list[str]) -> list[str]:
    """The seed's `deploy_profile_system.py --action X [--monitor] [--instance-id N]` form,
    mapped onto the subcommands (`python -m deploy --action status`)."""
    if "--action" not in argv:
        return argv
    i = argv.index("--action")
    if i + 1 >= len(argv) or argv[i + 1] not in SEED_ACTIONS:
        raise SystemExit(f"--action takes one of {', '.join(sorted(SEED_ACTIONS))}")
    action = argv[i + 1]
    rest = argv[:i] + argv[i + 2:]
    head = []
    if "--config" in rest:              # a group option: before the subcommand
        j = rest.index("--config")
        head, rest = rest[j:j + 2], rest[:j] + rest[j + 2:]
    if action != "deploy" and "--monitor" in rest:
        raise SystemExit("--monitor goes with --action deploy")
    return head + [action] + rest


def main() -> None:
    # `kill -USR1 PID` prints every thread's stack to stderr: what a command that hangs is doing
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    cli(args=seed_form(sys.argv[1:]), obj={})


if __name__ == "__main__":
    main()
