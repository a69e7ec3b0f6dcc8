"""`profiles job`: a scheduled run now, on every member of the group.

The jobs concept in the CLI layer: the runs themselves are streams/jobs/, their benchmark
tools/bench/jobs.py.
"""
from __future__ import annotations

import sys

import click

from deploy.cli.common import URL_HELP, discover, load


@click.command()
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
    outcome = run_job(discover(load(ctx), urls), name, full, timeout)
    for line, is_error in outcome.lines():
        click.echo(line, err=is_error)
    sys.exit(outcome.exit_code)


COMMANDS = [job]
