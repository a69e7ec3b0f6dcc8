"""`profiles worker`, `up` and `down`: one worker replica in the foreground, and a local cluster
of one worker (with the embedded broker when configured) until Ctrl-C.

The command layer of streams/worker.py (and of deploy/local_cluster.py for `up`).
"""
from __future__ import annotations

import sys

import click

from deploy import broker as embedded
from deploy.cli.common import load, say


@click.command()
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
    cfg = load(ctx)
    try:
        inst = instance_for(cfg, instance_id, web_port)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    sys.argv = [sys.argv[0]]  # Faust's Worker parses argv; ours was consumed by click
    run_worker(build_worker(cfg, inst).app, cfg, log_file)


@click.command()
@click.option("--timeout", type=float, default=90, show_default=True,
              help="Seconds to wait for the worker to become healthy.")
@click.pass_context
def up(ctx: click.Context, timeout: float) -> None:
    """Broker (when embedded) + topics + one worker, in the foreground until Ctrl-C."""
    from deploy.local_cluster import ClusterError, LocalCluster
    cluster = LocalCluster(load(ctx), ctx.obj.get("config_path"), say=say)
    try:
        cluster.start(1, timeout)
        click.echo("running; press Ctrl-C to stop")
        cluster.run_until_stopped()
    except (ClusterError, embedded.BrokerError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        for line in cluster.stop():
            say(line)


@click.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop workers started by `profiles up` and the embedded broker."""
    from deploy.local_cluster import stop_local
    for line in stop_local(load(ctx)):
        click.echo(line)


COMMANDS = [worker, up, down]
