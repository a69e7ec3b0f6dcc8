"""deploy.worker_process, the one way worker processes are started: the `profiles worker` argv,
and a real child process (a few lines of Python serving /health) started, waited on until
healthy, found gone when it exits, and stopped with its pid file."""
from __future__ import annotations

import signal

from deploy.broker import free_port
from deploy.worker_process import WorkerProcess, worker_argv
from deploy.workers import ready, serving

# /health answers `recovering` (503) twice, then ok; with "exit" it ends before serving.
SERVER = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
seen = []
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        seen.append(1)
        ok = len(seen) > 2
        body = json.dumps({"status": "ok" if ok else "recovering",
                           "recovery_completed": ok}).encode()
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        print("request", flush=True)
print("serving", os.environ.get("PROFILES_TEST_MARK"), flush=True)
if sys.argv[2] == "exit":
    sys.exit(3)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_worker_argv():
    assert worker_argv() == ["-m", "deploy", "worker"]
    assert worker_argv("c.yaml", 2, 7001, "w.log") == [
        "-m", "deploy", "--config", "c.yaml", "worker", "--instance-id", "2", "--web-port",
        "7001", "--log-file", "w.log"]
    assert worker_argv(None, 3) == ["-m", "deploy", "worker", "--instance-id", "3"]


def test_started_healthy_and_stopped(tmp_path):
    port = free_port()
    w = WorkerProcess(["-c", SERVER, str(port), "serve"], tmp_path / "logs" / "w.out", port,
                      instance_id=1, pid_file=tmp_path / "worker-1.pid",
                      env={"PROFILES_TEST_MARK": "1"}).start()
    try:
        assert (tmp_path / "worker-1.pid").read_text() == str(w.pid)
        body = w.wait_healthy(30)
        assert body == {"status": "ok", "recovery_completed": True}
        assert w.alive() and ready(w.url()) is not None and serving(w.url()) is not None
    finally:
        w.stop(grace=5)
    assert not w.alive() and w.returncode == -signal.SIGTERM
    assert not (tmp_path / "worker-1.pid").exists()
    assert "serving 1" in (tmp_path / "logs" / "w.out").read_text()    # env over ours


def test_a_process_that_exits_is_not_waited_for(tmp_path):
    port = free_port()
    w = WorkerProcess(["-c", SERVER, str(port), "exit"], tmp_path / "w.out", port).start()
    assert w.wait_healthy(30) is None
    assert not w.alive() and w.returncode == 3
