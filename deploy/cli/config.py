"""`profiles config`: inspect and validate configuration.

The command layer of features/config.py.
"""
from __future__ import annotations

import sys

import click

from features.config import ConfigError, load_config


@click.group()
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
               f"rules, broker {cfg.kafka.bootstrap_servers}, "
               f"{cfg.kafka.partitions} partitions")


COMMANDS = [config]
