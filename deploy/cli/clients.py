"""`profiles produce`, `items load`, `tail` and `query`: events and items in, profiles out.

The command layer of deploy/clients.py.
"""
from __future__ import annotations

import sys

import click

from deploy.cli.common import load
from deploy.cluster import ENV_URL


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=click.FloatRange(min=1), default=None,
              help="At most this many events per second (default: as fast as possible).")
@click.pass_context
def produce(ctx: click.Context, file: str, rate: float | None) -> None:
    """Send events (JSONL or TAAC seq.jsonl) to user-events, keyed by user_id."""
    from deploy.clients import produce_events
    n, eps = produce_events(load(ctx), file, rate)
    click.echo(f"produced {n:,} events ({eps:,.0f}/s)")


@click.group()
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
        n, _ = load_items(load(ctx), file)
    except CatalogError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"published {n:,} items")


@click.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained record.")
@click.option("--max", "limit", type=click.IntRange(1), default=None, help="Stop after N.")
@click.option("--topic", default=None, help="Another topic (default: profile-updates).")
@click.pass_context
def tail_cmd(ctx: click.Context, from_beginning: bool, limit: int | None, topic: str | None):
    """Print profile updates (one JSON per line) as they arrive."""
    from deploy.clients import tail
    cfg = load(ctx)
    try:
        tail(cfg, topic or cfg.kafka.topics.profile_updates, from_beginning, limit)
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("user_ids", nargs=-1, required=True)
@click.option("--url", default=None, help=f"A worker's base URL (default: ${ENV_URL}, a local "
              "worker, the configured address); it routes each id to its owner.")
@click.pass_context
def query(ctx: click.Context, user_ids: tuple[str, ...], url: str | None) -> None:
    """Print the current profile of USER_ID(s) from the query API; exit 1 if one is unknown."""
    import json

    from deploy.cluster import query_profiles
    from deploy.workers import WorkerCallError
    from streams.web.auth import client_token
    cfg = load(ctx)
    try:
        body = query_profiles(cfg, user_ids, url, client_token(cfg))
    except WorkerCallError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(body, ensure_ascii=False, indent=2))
    if body.get("missing"):
        sys.exit(1)


COMMANDS = [produce, items, tail_cmd, query]
