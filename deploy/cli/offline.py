"""`profiles batch` and `training-set`: the offline paths, from files to files."""
from __future__ import annotations

import sys
from types import ModuleType

import click

from deploy.cli.common import load


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
    module: ModuleType                  # offline.spark or offline.local
    if engine == "spark":
        from offline import spark as module
    else:
        from offline import local as module
        module.keep_freed_memory()      # this process runs only this command
    return module


@click.command()
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
    cfg = load(ctx)
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


@click.command("training-set")
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
    cfg = load(ctx)
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


COMMANDS = [batch, training_set]
