"""`profiles sample`, `demo`: the tooling (tools/) reached through the one command."""
from __future__ import annotations

import click

from deploy import broker as embedded
from deploy.cli.common import load, say


@click.command()
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

    from tools.data.sample import SampleSpec, write_sample
    spec = SampleSpec(users, days, n_items, seed, activity=activity)
    click.echo(json.dumps(write_sample(spec, out)))


@click.command()
@click.option("--users", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--days", type=click.IntRange(1, 365), default=35, show_default=True)
@click.option("--instances", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--exit", "exit_after", is_flag=True,
              help="Stop and exit once the replay is processed (0 when it matched the batch path).")
@click.pass_context
def demo(ctx: click.Context, users: int, days: int, instances: int, exit_after: bool) -> None:
    """Local cluster + sample data replayed with progress + profiles shown; then serve until
    Ctrl-C (or exit with --exit)."""
    from deploy.local_cluster import ClusterError, LocalCluster
    from tools.demo import run_demo
    cluster = LocalCluster(load(ctx), ctx.obj.get("config_path"), say=say)
    ok = False
    try:
        ok = run_demo(cluster, users, days, instances, say)
        if not exit_after:
            click.echo("running; press Ctrl-C to stop")
            cluster.run_until_stopped()
    except (ClusterError, embedded.BrokerError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        ok = True
    finally:
        for line in cluster.stop():
            say(line)
    if exit_after and not ok:
        raise click.ClickException("the streamed profiles differ from the batch path")


COMMANDS = [sample, demo]
