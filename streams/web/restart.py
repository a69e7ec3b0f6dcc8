"""`POST /restart`: the worker restarts in place, for rolling restarts of clusters the CLI did not
start. It answers 202, shuts down as on SIGTERM (leaves the group, closes its tables), then runs
its own command line again in the same process: the pid stays, so whatever started it (a shell,
the supervisor of `profiles deploy`, a container runtime) sees it keep running."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import faust
from faust.web import Request, Response, View

if TYPE_CHECKING:
    from streams.jobs import ScheduledJobs

log = logging.getLogger(__name__)
_requested: list[bool] = []
HARD_RESTART_AFTER = 30.0       # seconds a restart in place waits for the graceful stop
# the epoch second until which a start that failed on the broker runs again (streams/worker.py);
# in the environment because each attempt is a new exec of the same command line
START_DEADLINE_ENV = "PROFILES_START_DEADLINE"


def restart_in_place(reason: str, hard_after: float = HARD_RESTART_AFTER) -> None:
    """Stop as on SIGTERM, then run the same command line again in this process. A stop that
    takes longer than `hard_after` seconds is cut short (RocksDB's write-ahead log keeps what
    was written)."""
    log.warning("restarting in place: %s", reason)
    # a new run of starts: the broker wait of streams/worker.py counts from now
    os.environ.pop(START_DEADLINE_ENV, None)
    request_exec_again()
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
    loop.call_later(hard_after, exec_again_if_requested)


def add_restart_route(app: faust.App, jobs: ScheduledJobs, instance_id: int) -> None:
    @app.page("/restart")
    class Restart(View):
        async def get(self, request: Request) -> Response:
            return self.json({"error": "POST to restart this worker"}, status=405)

        async def post(self, request: Request) -> Response:
            if jobs.running:
                return self.json({"error": f"the {jobs.running} job is running"}, status=409)
            restart_in_place("requested over HTTP")
            return self.json({"restarting": instance_id}, status=202)


def request_exec_again() -> None:
    """Run the same command line again once the worker has stopped."""
    _requested.append(True)


def exec_again_if_requested() -> None:
    """After the worker has stopped: the same command line again, when a restart was asked."""
    if not _requested:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
