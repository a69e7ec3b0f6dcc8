"""`profiles backup list|restore`: the RocksDB backups the daily job writes."""
from __future__ import annotations

import sys

import click

from deploy.cli.common import URL_HELP, load


@click.group()
def backup() -> None:
    """RocksDB backups the daily job writes under the data dir."""


@backup.command("list")
@click.option("--instance-id", type=int, default=None, help="Only this worker's backups.")
@click.option("--url", "urls", multiple=True, help=URL_HELP)
@click.pass_context
def backup_list(ctx: click.Context, instance_id: int | None, urls: tuple[str, ...]) -> None:
    """List every worker's backups, oldest first; with no worker running, those under this
    machine's data dir. Exit 1 when a worker did not answer."""
    from deploy.cluster import NoWorkerAnswers
    from deploy.cluster_jobs import list_backups
    try:
        lines, failed, local_dir = list_backups(load(ctx), urls, instance_id)
    except NoWorkerAnswers as e:
        raise click.ClickException(str(e)) from None
    if local_dir is not None:
        click.echo(f"no worker answers; backups under {local_dir}:", err=True)
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
    from deploy.cluster_jobs import restore_backup
    from streams.state.backups import BackupError
    try:
        click.echo(restore_backup(load(ctx), instance_id, name))
    except BackupError as e:
        raise click.ClickException(str(e)) from None


COMMANDS = [backup]
