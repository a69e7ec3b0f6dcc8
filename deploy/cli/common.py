"""What every command group shares: the active config, printing, the `--url` option's help and
finding the running cluster."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from deploy.cluster import ENV_URL
from features.config import ConfigError, ProfileConfig, load_config

if TYPE_CHECKING:
    from deploy.cluster import Cluster

URL_HELP = (f"A worker to ask for the group (repeatable; default: ${ENV_URL}, the local "
            "workers' pid files, the configured address). Every member is then reached.")


def load(ctx: click.Context) -> ProfileConfig:
    """The config of `--config` ($PROFILES_CONFIG, ./profile_config.yaml); a bad one is a
    clear error naming each bad key."""
    try:
        return load_config(ctx.obj.get("config_path"))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def say(line: str) -> None:
    """Echo that survives a closed stdout (a pipe whose reader got the same Ctrl-C)."""
    try:
        click.echo(line)
    except OSError:
        pass


def discover(cfg: ProfileConfig, urls: tuple[str, ...]) -> Cluster:
    """The running cluster, found through the first worker that answers."""
    from deploy.cluster import NoWorkerAnswers
    from deploy.cluster import discover as find
    from streams.web.auth import client_token
    try:
        return find(cfg, urls, client_token(cfg))
    except NoWorkerAnswers as e:
        raise click.ClickException(str(e)) from None
