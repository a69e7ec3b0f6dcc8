"""`GET /dashboard` rendered in headless Chromium (Debian's `chromium`, installed by the test when
it is missing and apt-get can): every chart drew with data; the screenshot is kept in
test-artifacts/dashboard.png."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from features.sample import SampleSpec, write_sample
from tests.harness import ARTIFACTS, http_json, profile_worker, wait_for, write_config

pytestmark = pytest.mark.integration
CHARTS = ("c-throughput", "c-latency", "c-lag", "c-levels", "c-types", "c-tags")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("Debian chromium is not installed and cannot be installed here")
    return found


def headless(browser: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_dashboard_draws_every_chart_with_data(broker, workers, tmp_path):
    browser = chromium()
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2},
                            monitoring={"quality_interval_seconds": 2})
    cfg = load_config(cfg_path, env={})
    sample = tmp_path / "sample"
    write_sample(SampleSpec(users=400, days=35, activity=0.5), sample)
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    port = free_port()
    w = profile_worker(workers, cfg_path, 1, port, "w1").start()
    w.wait_healthy()
    produce_events(cfg, sample / "events.jsonl", rate=4000, progress=None)

    def has_data():
        d = http_json(w.url("/dashboard/data"))[1]
        s = d["series"]
        return len(s) >= 3 and any(p["events_per_second"] > 0 for p in s) and \
            any(p["p99"] for p in s) and d["quality_scan"]["users"] > 0
    assert wait_for(has_data, 90, interval=1, what="dashboard data")
    time.sleep(4)          # a few more samples after the replay: lag falls to 0 in the chart

    url = w.url("/dashboard")
    dom = headless(browser, "--virtual-time-budget=6000", "--dump-dom", url).stdout
    assert 'data-ready="1"' in dom, dom[-2000:]
    for chart in CHARTS:
        m = re.search(rf'id="{chart}"[^>]*data-points="(\d+)"', dom)
        assert m and int(m.group(1)) > 0, (chart, m)
    state = re.search(r'<p id="state"[^>]*>([^<]*)</p>', dom).group(1)
    assert state.startswith("updated ") and "users sampled" in state, state
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', dom)   # no CDN

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    r = headless(browser, "--virtual-time-budget=6000", "--window-size=1280,1400",
                 f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 20_000, r.stderr[-2000:]
    print(f"dashboard screenshot: {shot} ({shot.stat().st_size:,} bytes)")
