"""`profiles`: the one console command. Subcommands stay thin; the work lives in modules."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import click

from deploy import broker as embedded
from deploy.cluster import ENV_URL
from features.config import ConfigError, ProfileConfig, load_config


def _load(ctx: click.Context) -> ProfileConfig:
    try:
        return load_config(ctx.obj.get("config_path"))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="PROFILES_CONFIG", default=None,
              help="profile_config.yaml to use (default: $PROFILES_CONFIG or ./profile_config.yaml).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Streaming user profiles: features 106/107/108/110 kept up to date from Kafka."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


# ---------------------------------------------------------------- config

@cli.group()
def config() -> None:
    """Inspect and validate configuration."""


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.pass_context
def config_check(ctx: click.Context, file: str | None) -> None:
    """Validate FILE (default: the active config); exit 1 naming each bad key."""
    try:
        cfg = load_config(file or ctx.obj.get("config_path"))
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    n_rules = len(cfg.behavior_preferences.rules)
    click.echo(f"config OK: {len(cfg.interest_tags.categories)} categories, {n_rules} preference "
               f"rules, broker {cfg.kafka.bootstrap_servers} (compat {cfg.compat}), "
               f"{cfg.kafka.partitions} partitions")


# ---------------------------------------------------------------- embedded broker

@cli.group()
def broker() -> None:
    """The embedded Tansu broker for local runs (data in memory only)."""


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
    verb = "started" if started else "already running"
    click.echo(f"embedded broker {verb} (pid {st.pid}) on 127.0.0.1:{st.port}; log {st.log_file}")


@broker.command("stop")
@click.pass_context
def broker_stop(ctx: click.Context) -> None:
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


# ---------------------------------------------------------------- worker

@cli.command()
@click.option("--instance-id", type=int, default=1, show_default=True,
              help="Replica number: own data dir (data_dir/instance-N) and web port.")
@click.option("--web-port", type=int, default=None,
              help="Web port (default: worker.web_port + instance-id - 1).")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Log to this file, rotated by size (worker.log_max_bytes, log_backups).")
@click.pass_context
def worker(ctx: click.Context, instance_id: int, web_port: int | None,
           log_file: str | None) -> None:
    """Run one worker replica in the foreground."""
    from streams.app import instance_for
    from streams.worker import build_worker, run_worker
    cfg = _load(ctx)
    try:
        inst = instance_for(cfg, instance_id, web_port)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    sys.argv = [sys.argv[0]]  # Faust's Worker parses argv; ours was consumed by click
    run_worker(build_worker(cfg, inst).app, cfg, log_file)


def _say(line: str) -> None:
    """Echo that survives a closed stdout (a pipe whose reader got the same Ctrl-C)."""
    try:
        click.echo(line)
    except OSError:
        pass


def _run_until_interrupted(cluster) -> None:
    click.echo("running; press Ctrl-C to stop")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    while not stopping:
        gone = cluster.exited()
        if gone is not None:
            raise click.ClickException(f"worker {gone.instance_id} exited with code "
                                       f"{gone.proc.returncode}; see {gone.log_path}")
        time.sleep(0.5)


@cli.command()
@click.option("--timeout", type=float, default=90, show_default=True,
              help="Seconds to wait for the worker to become healthy.")
@click.pass_context
def up(ctx: click.Context, timeout: float) -> None:
    """Broker (when embedded) + topics + one worker, in the foreground until Ctrl-C."""
    from deploy.local import ClusterError, LocalCluster
    cluster = LocalCluster(_load(ctx), ctx.obj.get("config_path"), say=_say)
    try:
        cluster.start(1, timeout)
        _run_until_interrupted(cluster)
    except (ClusterError, embedded.BrokerError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        for line in cluster.stop():
            _say(line)


@cli.command()
@click.option("--users", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--days", type=click.IntRange(1, 365), default=35, show_default=True)
@click.option("--instances", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--exit", "exit_after", is_flag=True,
              help="Stop and exit once the replay is processed (0 when it matched the batch path).")
@click.pass_context
def demo(ctx: click.Context, users: int, days: int, instances: int, exit_after: bool) -> None:
    """Local cluster + sample data replayed with progress + profiles shown; then serve until
    Ctrl-C (or exit with --exit)."""
    from deploy.demo import run_demo
    from deploy.local import ClusterError, LocalCluster
    cluster = LocalCluster(_load(ctx), ctx.obj.get("config_path"), say=_say)
    ok = False
    try:
        ok = run_demo(cluster, users, days, instances, _say)
        if not exit_after:
            _run_until_interrupted(cluster)
    except (ClusterError, embedded.BrokerError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        ok = True
    finally:
        for line in cluster.stop():
            _say(line)
    if exit_after and not ok:
        raise click.ClickException("the streamed profiles differ from the batch path")


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop workers started by `profiles up` and the embedded broker."""
    cfg = _load(ctx)
    for pid_file in sorted(cfg.run_dir.glob("worker-*.pid")):
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            click.echo(f"stopped worker pid {pid}")
        except (ValueError, ProcessLookupError, OSError):
            pass
        pid_file.unlink(missing_ok=True)
    click.echo("embedded broker stopped" if embedded.stop(cfg.run_dir)
               else "embedded broker: not running")


# ---------------------------------------------------------------- offline

def _offline_options(fn):
    """Options shared by `batch` and `training-set`: inputs, formats and the engine."""
    formats = click.Choice(["jsonl", "parquet"])
    for opt in reversed([
        click.option("--items", type=click.Path(exists=True), default=None,
                     help="Item features: item_feat_dict.json, JSONL {item_id, features} or "
                          "Parquet (read by this process)."),
        click.option("--events", required=True, type=str,
                     help="Events: JSONL (line order = log order), TAAC seq.jsonl, or Parquet "
                          "(a file or a folder of part files)."),
        click.option("--events-format", type=formats, default=None,
                     help="Default: from the extension (.parquet, .pq or a folder: parquet)."),
        click.option("--order-by", default=None, metavar="COLUMN",
                     help="Parquet events: an integer column giving the log order within a "
                          "user (e.g. offset); default: the row order of the files."),
        click.option("--out-format", type=formats, default=None,
                     help="Default: from OUT's extension."),
        click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
                     show_default=True, help="local: worker processes on this machine; "
                                             "spark: PySpark (needs the 'spark' extra and a JDK)."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Local engine: worker processes (default: one per core, at most one "
                          "per 8 MiB of events)."),
        click.option("--master", default="local[*]", show_default=True,
                     help="Spark engine: the Spark master URL."),
        click.option("--quiet", is_flag=True, help="No progress on stderr."),
    ]):
        fn = opt(fn)
    return fn


def _engine_kwargs(engine: str, workers: int | None, master: str) -> dict:
    return {"workers": workers} if engine == "local" else {"master": master}


def _engine(engine: str):
    if engine == "spark":
        from offline import spark as module
    else:
        from offline import local as module
    return module


@cli.command()
@_offline_options
@click.option("--out", required=True, type=str,
              help="Profiles (JSONL or Parquet); dead letters go beside it as OUT.dlq.jsonl or "
                   "OUT.dlq.parquet. With --engine spark each is a folder of part files.")
@click.option("--as-of", type=int, default=None,
              help="Evaluate every user at this Unix time (default: each user's own T).")
@click.pass_context
def batch(ctx: click.Context, items, events, events_format, order_by, out_format, engine,
          workers, master, quiet, out, as_of) -> None:
    """Offline batch path: the same profiles the stream computes, from files."""
    import json

    from features.catalog import CatalogError
    from offline import OfflineError
    from offline.formats import detect, dlq_path
    cfg = _load(ctx)
    try:
        report = _engine(engine).run_batch(
            cfg, items, events, out, as_of=as_of, events_format=events_format,
            out_format=out_format, order_by=order_by,
            progress_stream=None if quiet else sys.stderr,
            **_engine_kwargs(engine, workers, master))
    except (CatalogError, OfflineError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(report.summary()))
    dlq = dlq_path(out, detect(out, out_format))
    click.echo(f"{report.users} profiles -> {out}; {sum(report.rejected.values())} dead letters "
               f"-> {dlq}; {report.events_per_second:,.0f} events/s", err=True)


@cli.command("training-set")
@_offline_options
@click.option("--labels", required=True, type=str,
              help="Label rows with user_id and ts (Unix seconds) and any other columns: "
                   "JSONL or Parquet.")
@click.option("--labels-format", type=click.Choice(["jsonl", "parquet"]), default=None,
              help="Default: from the extension.")
@click.option("--out", required=True, type=str,
              help="Training rows (JSONL or Parquet): each label row followed by its user's "
                   "profile fields as of ts; dead letters of bad events beside it (OUT.dlq.*).")
@click.pass_context
def training_set(ctx: click.Context, items, events, events_format, order_by, out_format, engine,
                 workers, master, quiet, labels, labels_format, out) -> None:
    """Point-in-time training set: for every label row, the profile its user had at ts, built
    only from events at or before ts (no leakage), by the code that serves the stream."""
    import json

    from features.catalog import CatalogError
    from offline import OfflineError
    cfg = _load(ctx)
    try:
        report = _engine(engine).run_training_set(
            cfg, items, events, labels, out, events_format=events_format,
            labels_format=labels_format, out_format=out_format, order_by=order_by,
            progress_stream=None if quiet else sys.stderr,
            **_engine_kwargs(engine, workers, master))
    except (CatalogError, OfflineError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(report.summary()))
    click.echo(f"{report.labels:,} training rows ({report.users:,} users) -> {out}; "
               f"{report.events:,} events read, {report.events_per_second:,.0f} events/s",
               err=True)


@cli.command()
@click.option("--users", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--days", type=click.IntRange(1, 365), default=30, show_default=True)
@click.option("--items", "n_items", type=click.IntRange(10), default=5000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--activity", type=click.FloatRange(0.01, 10), default=1.0, show_default=True,
              help="Scales how often users are active (events per user).")
@click.option("--out", required=True, type=click.Path(file_okay=False))
def sample(users, days, n_items, seed, activity, out) -> None:
    """Write deterministic sample data: OUT/item_feat_dict.json and OUT/events.jsonl."""
    import json

    from features.sample import SampleSpec, write_sample
    spec = SampleSpec(users, days, n_items, seed, activity=activity)
    click.echo(json.dumps(write_sample(spec, out)))


# ---------------------------------------------------------------- producing and watching

@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=click.FloatRange(min=1), default=None,
              help="At most this many events per second (default: as fast as possible).")
@click.pass_context
def produce(ctx: click.Context, file: str, rate: float | None) -> None:
    """Send events (JSONL or TAAC seq.jsonl) to user-events, keyed by user_id."""
    from deploy.clients import produce_events
    n, eps = produce_events(_load(ctx), file, rate)
    click.echo(f"produced {n:,} events ({eps:,.0f}/s)")


@cli.group()
def items() -> None:
    """The item catalog (compacted item-features topic)."""


@items.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def items_load(ctx: click.Context, file: str) -> None:
    """Publish item_feat_dict.json or JSONL {item_id, features} to item-features."""
    from deploy.clients import load_items
    from features.catalog import CatalogError
    try:
        n, _ = load_items(_load(ctx), file)
    except CatalogError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"published {n:,} items")


@cli.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained record.")
@click.option("--max", "limit", type=click.IntRange(1), default=None, help="Stop after N.")
@click.option("--topic", default=None, help="Another topic (default: profile-updates).")
@click.pass_context
def tail_cmd(ctx: click.Context, from_beginning: bool, limit: int | None, topic: str | None):
    """Print profile updates (one JSON per line) as they arrive."""
    from deploy.clients import tail
    cfg = _load(ctx)
    try:
        tail(cfg, topic or cfg.kafka.topics.profile_updates, from_beginning, limit)
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("user_ids", nargs=-1, required=True)
@click.option("--url", default=None, help=f"A worker's base URL (default: ${ENV_URL}, a local "
              "worker, the configured address); it routes each id to its owner.")
@click.pass_context
def query(ctx: click.Context, user_ids: tuple[str, ...], url: str | None) -> None:
    """Print the current profile of USER_ID(s) from the query API; exit 1 if one is unknown."""
    import json

    from deploy.cluster import first_workers
    from deploy.workers import WorkerCallError, call
    from streams.auth import client_token
    cfg = _load(ctx)
    path = f"/profiles/{user_ids[0]}" if len(user_ids) == 1 else f"/profiles?ids={','.join(user_ids)}"
    for base in first_workers(cfg, [url] if url else []):
        try:
            body = call(base + path, token=client_token(cfg), timeout=10)
            break
        except WorkerCallError as e:
            if not e.unreachable:
                raise click.ClickException(str(e)) from None
            err = e
    else:
        raise click.ClickException(str(err))
    click.echo(json.dumps(body, ensure_ascii=False, indent=2))
    if body.get("missing"):
        sys.exit(1)


# ---------------------------------------------------------------- operations

@cli.command("deploy")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Workers to run (instance ids 1..N).")
@click.option("--instance-id", type=click.IntRange(1, 64), default=None,
              help="Run only this instance (the seed's one-instance-per-host form).")
@click.option("--monitor", is_flag=True, help="Restart workers that crash (自动恢复).")
@click.option("--foreground", is_flag=True, help="Supervise in this process until Ctrl-C.")
@click.option("--timeout", type=float, default=120, show_default=True)
@click.pass_context
def deploy_cmd(ctx: click.Context, instances: int, instance_id: int | None, monitor: bool,
               foreground: bool, timeout: float) -> None:
    """Start a local cluster under a supervisor: the embedded broker (when configured) and N
    workers, logs rotated under the run dir; returns once every worker is healthy."""
    import subprocess

    from deploy.supervisor import Supervisor, setup_logging, supervisor_pid
    from deploy.workers import ready
    cfg = _load(ctx)
    if supervisor_pid(cfg):
        raise click.ClickException(f"a cluster is already running (supervisor pid "
                                   f"{supervisor_pid(cfg)}); `profiles stop` first")
    ids = [instance_id] if instance_id else list(range(1, instances + 1))
    if foreground:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(cfg)
        Supervisor(cfg, ctx.obj.get("config_path"), ids, monitor).run()
        return
    cmd = [sys.executable, "-m", "deploy"]
    if ctx.obj.get("config_path"):
        cmd += ["--config", ctx.obj["config_path"]]
    cmd += ["deploy", "--foreground"] + (["--monitor"] if monitor else [])
    cmd += ["--instance-id", str(instance_id)] if instance_id else ["--instances",
                                                                   str(instances)]
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.run_dir / "supervisor.out", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    click.echo(f"supervisor started (pid {proc.pid}); logs in {cfg.run_dir}")
    deadline = time.monotonic() + timeout
    pending = {i: f"http://{cfg.worker.web_host}:{cfg.worker.web_port + i - 1}" for i in ids}
    from deploy.supervisor import read_cluster
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the supervisor exited ({proc.returncode}); see "
                                       f"{cfg.run_dir / 'supervisor.log'}")
        for w in (read_cluster(cfg) or {}).get("workers", []):
            if w["instance_id"] in pending and (w["gave_up"] or (not monitor and
                                                                 not w["alive"])):
                log = cfg.run_dir / f"worker-{w['instance_id']}.log"
                raise click.ClickException(f"worker {w['instance_id']} keeps exiting: "
                                           f"{_last_error(log)} (see {log}; the cluster is "
                                           f"still up: `profiles stop`)")
        for i, url in list(pending.items()):
            h = ready(url)
            if h:
                click.echo(f"worker {i} healthy: {url}  partitions "
                           f"{len(h.get('assigned_partitions', []))}")
                del pending[i]
        time.sleep(0.5)
    if pending:
        raise click.ClickException(f"workers {sorted(pending)} not healthy in {timeout:.0f} s; "
                                   f"see {cfg.run_dir}/worker-N.log")
    click.echo("cluster up" + (" (auto-restart on)" if monitor else ""))


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "[ERROR]" in ln or "Error" in ln]
    return errors[-1].strip()[-300:] if errors else "no error in its log"


URL_HELP = (f"A worker to ask for the group (repeatable; default: ${ENV_URL}, the local "
            "workers' pid files, the configured address). Every member is then reached.")


@cli.command()
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, urls: tuple[str, ...], as_json: bool) -> None:
    """Workers, partitions, lag, rates, quality, business figures and alerts, cluster-wide."""
    import json

    from deploy.cluster_status import gather, render
    st = gather(_load(ctx), list(urls) or None)
    if as_json:
        click.echo(json.dumps({"asked": st.asked, "generation": st.generation,
                               "partitions": st.partitions, "unowned": st.unowned(),
                               "workers": [w.__dict__ for w in st.workers],
                               "quality": st.quality().to_dict(),
                               "alerts": st.alerts()}, default=str))
        return
    for line in render(st):
        click.echo(line)


@cli.command()
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.pass_context
def health(ctx: click.Context, urls: tuple[str, ...]) -> None:
    """Exit 0 healthy, 1 degraded, 2 down; prints the reasons."""
    from deploy.cluster_status import gather, verdict
    code, reasons = verdict(gather(_load(ctx), list(urls) or None))
    click.echo(["healthy", "degraded", "down"][code])
    for r in reasons:
        click.echo(f"  - {r}")
    sys.exit(code)


@cli.command()
@click.option("--instance-id", type=int, default=None, help="Only this worker.")
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.option("--timeout", type=float, default=300, show_default=True,
              help="Seconds each worker has to be back.")
@click.pass_context
def restart(ctx: click.Context, instance_id: int | None, urls: tuple[str, ...],
            timeout: float) -> None:
    """Rolling restart of the cluster's workers, one at a time, each back healthy first (by
    the supervisor for a cluster of `profiles deploy`; else each worker restarts in place)."""
    from deploy.supervisor import supervisor_pid
    cfg = _load(ctx)
    if supervisor_pid(cfg) and not urls:
        restarted, failed = _supervisor_restart(cfg, instance_id, timeout)
        for line in restarted:
            click.echo(line)
    else:
        from deploy.rolling_restart import rolling_restart
        failed = rolling_restart(_cluster(cfg, urls), instance_id, timeout, say=_say).failed
    for line in failed:
        click.echo(line, err=True)
    if failed:
        sys.exit(1)


def _supervisor_restart(cfg: ProfileConfig, instance_id: int | None,
                        timeout: float) -> tuple[list[str], list[str]]:
    import json
    import uuid

    from deploy.supervisor import request_file
    rid = uuid.uuid4().hex
    result = cfg.run_dir / "supervisor-result.json"
    result.unlink(missing_ok=True)
    request_file(cfg).write_text(json.dumps({"action": "restart", "instance_id": instance_id,
                                             "id": rid}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            res = json.loads(result.read_text())
            if res.get("id") == rid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        raise click.ClickException(f"restart not finished in {timeout:.0f} s")
    return ([f"worker {i} restarted and healthy" for i in res["restarted"]],
            [f"worker {f['instance']}: {f['error']}" for f in res["failed"]])


def _cluster(cfg: ProfileConfig, urls: tuple[str, ...]):
    """The running cluster, found through the first worker that answers."""
    from deploy.cluster import NoWorkerAnswers, discover
    from streams.auth import client_token
    try:
        return discover(cfg, urls, client_token(cfg))
    except NoWorkerAnswers as e:
        raise click.ClickException(str(e)) from None


@cli.command()
@click.option("--timeout", type=float, default=60, show_default=True)
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the cluster started by `profiles deploy` (workers first, then the broker)."""
    from deploy.supervisor import supervisor_pid
    cfg = _load(ctx)
    pid = supervisor_pid(cfg)
    if not pid:
        click.echo("no cluster started by `profiles deploy` is running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while supervisor_pid(cfg) and time.monotonic() < deadline:
        time.sleep(0.3)
    if supervisor_pid(cfg):
        raise click.ClickException(f"supervisor {pid} still running after {timeout:.0f} s")
    click.echo("cluster stopped")


# ---------------------------------------------------------------- scheduled jobs and backups

@cli.command()
@click.argument("name", type=click.Choice(["hourly", "daily", "weekly"]))
@click.option("--full", is_flag=True, help="daily: re-evaluate every user, due or not.")
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.option("--timeout", type=float, default=3600, show_default=True)
@click.pass_context
def job(ctx: click.Context, name: str, full: bool, urls: tuple[str, ...], timeout: float) -> None:
    """Run a scheduled job now on every member of the group (each on its own partitions);
    print the reports. Exit 1 when a worker failed or a partition was not run, 2 when the
    weekly run found drift (it corrects it)."""
    from deploy.cluster_jobs import run_job
    outcome = run_job(_cluster(_load(ctx), urls), name, full, timeout)
    for line, is_error in outcome.lines():
        click.echo(line, err=is_error)
    sys.exit(outcome.exit_code)


@cli.group()
def backup() -> None:
    """RocksDB backups the daily job writes under the data dir."""


@backup.command("list")
@click.option("--instance-id", type=int, default=None, help="Only this worker's backups.")
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.pass_context
def backup_list(ctx: click.Context, instance_id: int | None, urls: tuple[str, ...]) -> None:
    """List every worker's backups, oldest first; with no worker running, those under this
    machine's data dir. Exit 1 when a worker did not answer."""
    from deploy.cluster import NoWorkerAnswers, discover
    from deploy.cluster_jobs import backup_lines, local_backup_lines
    from streams.auth import client_token
    cfg = _load(ctx)
    try:
        lines, failed = backup_lines(discover(cfg, urls, client_token(cfg)), instance_id)
    except NoWorkerAnswers as e:
        if urls:
            raise click.ClickException(str(e)) from None
        click.echo(f"no worker answers; backups under {cfg.data_dir / 'backups'}:", err=True)
        lines, failed = local_backup_lines(cfg, instance_id), []
    for line in lines or ["no backups"]:
        click.echo(line)
    for r in failed:
        click.echo(f"{r.member.url}: FAILED {r.error}", err=True)
    if failed:
        sys.exit(1)


@backup.command("restore")
@click.argument("name", required=False)
@click.option("--instance-id", type=int, default=1, show_default=True)
@click.pass_context
def backup_restore(ctx: click.Context, name: str | None, instance_id: int) -> None:
    """Restore backup NAME (default: the newest) of a stopped worker; on its next start it
    replays only the changelog written since."""
    from deploy.workers import local_workers
    from streams import backups
    from streams.app import instance_for
    cfg = _load(ctx)
    if any(w.pid and w.instance_id == instance_id for w in local_workers(cfg)):
        raise click.ClickException(f"worker {instance_id} is running; stop it first")
    found = backups.list_backups(backups.root(cfg, instance_id))
    chosen = [b for b in found if b.name == name] if name else found[-1:]
    if not chosen:
        have = ", ".join(b.name for b in found) or "none"
        raise click.ClickException(f"no backup {name or ''} for instance {instance_id} "
                                   f"(have: {have})")
    try:
        written = backups.restore(chosen[0], instance_for(cfg, instance_id).data_dir)
    except backups.BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored {chosen[0].name}: {len(written)} partition databases into "
               f"{written[0].parent if written else '-'}")


FINDINGS_HEADING = "## Where the time goes"


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
@click.option("--only", type=click.Choice(["offline"]), default=None,
              help="Run one section alone (offline: batch and training-set on every engine) "
                   "and replace that section of OUT.")
def bench(users: int, days: int, workdir: str, out: str, tuned_batch: int, latency_rate: float,
          latency_seconds: float, soak_rate: float, soak_seconds: float,
          only: str | None) -> None:
    """Side-by-side on one embedded broker: our pipeline (1 and 2 workers, and 1 with a larger
    batch), naive Faust, the read ceiling, the batch path; then latency at a steady rate and RSS
    over a soak run; then the offline engines. Prints the table and writes OUT."""
    import shutil
    if only == "offline":
        from deploy.bench import run_offline_only
        shutil.rmtree(workdir, ignore_errors=True)
        section = run_offline_only(Path(workdir), users, days, say=_say)
        _replace_section(Path(out), section, before=FINDINGS_HEADING)
        click.echo("\n" + section)
        click.echo(f"written to {out}")
        return

    from deploy.bench import run_bench
    shutil.rmtree(workdir, ignore_errors=True)
    table = run_bench(Path(workdir), users, days, say=_say, tuned_batch=tuned_batch,
                      latency_rate=latency_rate, latency_seconds=latency_seconds,
                      soak_rate=soak_rate, soak_seconds=soak_seconds)
    findings = ""    # the hand-written profile findings below the table stay
    if Path(out).exists():
        previous = Path(out).read_text()
        if FINDINGS_HEADING in previous:
            findings = "\n" + previous[previous.index(FINDINGS_HEADING):]
    Path(out).write_text(table + findings)
    click.echo("\n" + table)
    click.echo(f"written to {out}")


@cli.command()
@click.option("--users", type=click.IntRange(100), default=6000, show_default=True,
              help="Sample users (6,000 give about 230,000 events).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--hostile", type=click.IntRange(0), default=5000, show_default=True,
              help="Hostile payloads in the burst.")
@click.option("--kills", type=click.IntRange(0), default=5, show_default=True)
@click.option("--skip", multiple=True,
              type=click.Choice(["sigkill", "wipe", "sigstop", "reassign", "hostile"]),
              help="Leave a kind of fault out (repeatable).")
@click.option("--workdir", type=click.Path(file_okay=False), default="run/chaos",
              show_default=True)
def chaos(users: int, seed: int, hostile: int, kills: int, skip: tuple[str, ...],
          workdir: str) -> None:
    """Sample events through 3 workers under a seeded fault schedule; then profiles and states
    against the batch path: exit 0 only when mismatches, lost and double-applied events are 0."""
    import shutil

    from deploy.chaos import run_chaos
    shutil.rmtree(workdir, ignore_errors=True)
    report = run_chaos(Path(workdir), users, seed, hostile, say=_say, kills=kills, skip=skip)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
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

    from deploy.bench_jobs import run_bench_jobs
    shutil.rmtree(workdir, ignore_errors=True)
    section = run_bench_jobs(Path(workdir), users, due, full_daily, say=_say)
    _replace_section(Path(out), section)
    click.echo("\n" + section)
    click.echo(f"written to {out}")


def _replace_section(path: Path, section: str, before: str | None = None) -> None:
    """Put a `## ...` section into a markdown file, replacing the one with the same heading
    (a new one goes before the heading `before` when there is one, else at the end)."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else ""
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[nxt + 1:] if nxt >= 0 else "")
    elif before and before in text:
        at = text.index(before)
        text = text[:at] + section + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


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
    cli(args=seed_form(sys.argv[1:]), obj={})


if __name__ == "__main__":
    main()
