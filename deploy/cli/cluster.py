"""`profiles deploy`, `status`, `health`, `restart` and `stop`: a cluster under a supervisor on
this machine, and any running cluster seen through one of its workers.

The cluster concept in the CLI layer (deploy/cluster.py does the work; a worker's view:
streams/web/cluster.py).
"""
from __future__ import annotations

import sys

import click

from deploy.cli.common import URL_HELP, load, say


@click.command("deploy")
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
    from deploy import supervised
    cfg, config_path = load(ctx), ctx.obj.get("config_path")
    try:
        if foreground:
            supervised.run_foreground(cfg, config_path, instances, instance_id, monitor)
            return
        supervised.start(cfg, config_path, instances, instance_id, monitor, timeout,
                         say=click.echo)
    except supervised.SupervisedError as e:
        raise click.ClickException(str(e)) from None
    click.echo("cluster up" + (" (auto-restart on)" if monitor else ""))


@click.command()
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, urls: tuple[str, ...], as_json: bool) -> None:
    """Workers, partitions, lag, rates, quality, business figures and alerts, cluster-wide."""
    import json

    from deploy.cluster_status import gather, render
    st = gather(load(ctx), list(urls) or None)
    if as_json:
        click.echo(json.dumps(st.to_dict(), default=str))
        return
    for line in render(st):
        click.echo(line)


@click.command()
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.pass_context
def health(ctx: click.Context, urls: tuple[str, ...]) -> None:
    """Exit 0 healthy, 1 degraded, 2 down; prints the reasons."""
    from deploy.cluster_status import gather, verdict
    code, reasons = verdict(gather(load(ctx), list(urls) or None))
    click.echo(["healthy", "degraded", "down"][code])
    for r in reasons:
        click.echo(f"  - {r}")
    sys.exit(code)


@click.command()
@click.option("--instance-id", type=int, default=None, help="Only this worker.")
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.option("--timeout", type=float, default=300, show_default=True,
              help="Seconds each worker has to be back.")
@click.pass_context
def restart(ctx: click.Context, instance_id: int | None, urls: tuple[str, ...],
            timeout: float) -> None:
    """Rolling restart of the cluster's workers, one at a time, each back healthy first (by
    the supervisor for a cluster of `profiles deploy`; else each worker restarts in place)."""
    from deploy.cluster import NoWorkerAnswers
    from deploy.rolling_restart import restart as rolling_restart
    from deploy.supervised import SupervisedError
    try:
        result = rolling_restart(load(ctx), urls, instance_id, timeout, say=say)
    except (NoWorkerAnswers, SupervisedError) as e:
        raise click.ClickException(str(e)) from None
    for line in result.failed:
        click.echo(line, err=True)
    if result.failed:
        sys.exit(1)


@click.command()
@click.option("--timeout", type=float, default=60, show_default=True)
@click.pass_context
def stop(ctx: click.Context, timeout: float) -> None:
    """Stop the cluster started by `profiles deploy` (workers first, then the broker)."""
    from deploy import supervised
    try:
        stopped = supervised.stop(load(ctx), timeout)
    except supervised.SupervisedError as e:
        raise click.ClickException(str(e)) from None
    click.echo("cluster stopped" if stopped else
               "no cluster started by `profiles deploy` is running")


COMMANDS = [deploy_cmd, status, health, restart, stop]
