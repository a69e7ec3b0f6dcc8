"""`profiles bootstrap`: exact states from a log file, handed over to the stream."""
from __future__ import annotations

import sys

import click

from deploy.cli.common import load


@click.command()
@click.option("--events", required=True, type=str,
              help="The log: JSONL (line order = log order), TAAC seq.jsonl, or Parquet (a file "
                   "or a folder of part files).")
@click.option("--until-offsets", "until_offsets", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Hand over at offsets: JSON {\"<partition>\": <first offset not in the log>} "
                   "for every user-events partition (the log is an export up to them).")
@click.option("--until", "until_ts", type=int, default=None,
              help="Hand over at a time: the log holds every event up to this Unix time; the "
                   "stream skips the topic's events up to it.")
@click.option("--items", type=click.Path(exists=True), default=None,
              help="Item features file (default: the item-features topic is not read; give the "
                   "file the workers load).")
@click.option("--events-format", type=click.Choice(["jsonl", "parquet"]), default=None)
@click.option("--order-by", default=None, metavar="COLUMN",
              help="Parquet events: an integer column giving the log order within a user.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local",
              show_default=True)
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Local engine: worker processes (default: one per core).")
@click.option("--master", default="local[*]", show_default=True,
              help="Spark engine: the Spark master URL.")
@click.option("--stop-workers", is_flag=True,
              help="Stop the workers `profiles up` started on this host first (SIGTERM; they "
                   "leave the group). Without it, workers in the group make the bootstrap stop.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def bootstrap(ctx: click.Context, events, until_offsets, until_ts, items, events_format,
              order_by, engine, workers, master, stop_workers, quiet) -> None:
    """Build every user's state from a log (the data lake's history) and hand it to the stream:
    exact 30-day profiles on day one, with a topic that keeps less (docs/BOOTSTRAP.md)."""
    import json

    from bootstrap.handover import BootstrapError, HandOver, read_offsets_file
    from bootstrap.run import bootstrap as run
    from features.catalog import CatalogError
    from offline import OfflineError
    cfg = load(ctx)
    try:
        n = cfg.kafka.partitions
        offsets = None if until_offsets is None else read_offsets_file(until_offsets, n)
        handover = HandOver(n, offsets, until_ts)
        summary = run(cfg, items, events, handover, engine=engine, workers=workers,
                      master=master, events_format=events_format, order_by=order_by,
                      out=None if quiet else sys.stderr, stop_workers=stop_workers)
    except (BootstrapError, CatalogError, OfflineError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary.to_dict()))
    if not summary.already_done:
        click.echo(f"bootstrapped {summary.users:,} users from {summary.events:,} events "
                   f"({sum(summary.dead_letters.values()):,} dead letters) in "
                   f"{summary.seconds:,.1f} s; the group starts at {summary.group_offsets}",
                   err=True)


COMMANDS = [bootstrap]
