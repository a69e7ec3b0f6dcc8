"""`GET /dashboard` of a two-worker cluster under `worker.auth: all`, rendered in headless Chromium
(Debian's `chromium`, installed by the test when it is missing and apt-get can): the page asked
of one worker shows both (its figures are the sums of each worker's own), every activity level
and user type is drawn, long tag and preference names are drawn whole, the trend charts have
points; the screenshot is kept in test-artifacts/dashboard-cluster.png."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections import Counter

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from streams.web.auth import api_token
from tests.harness import ARTIFACTS, http_json, profile_worker, wait_for, write_config
from tests.integration.test_cluster_view import settled
from tools.data.sample import TOPICS, SampleSpec, write_sample

pytestmark = pytest.mark.integration
LINES = ("c-throughput", "c-latency", "c-lag", "c-quality-trend", "c-pref-trend",
         "c-tags-trend")
BARS = ("c-levels", "c-types", "c-tags", "c-prefs")
LONG_TAG = "entertainment_film_music_and_celebrity_news_from_around_the_world"
LONG_PREF = "prefers_many_distinct_items_over_the_whole_thirty_day_window"
LEVELS = 5           # the sample's users are at levels 1 and 2: the others are drawn at 0


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


def attr(dom: str, element_id: str, name: str) -> str | None:
    m = re.search(rf'<[^>]*\bid="{element_id}"[^>]*>', dom)
    found = m and re.search(rf'\b{name}="([^"]*)"', m.group(0))
    return html.unescape(found.group(1)) if found else None


def summed(parts: list[dict], field: str) -> Counter:
    out: Counter = Counter()
    for p in parts:
        out.update(p["quality_scan"][field])
    return out


def test_cluster_dashboard_shows_every_worker(broker, workers, tmp_path):
    browser = chromium()
    categories = {LONG_TAG if name == "entertainment" else name: fids
                  for name, fids in TOPICS.items()}
    cfg_path = write_config(
        tmp_path / "cfg.yaml", broker, kafka={"partitions": 4},
        worker={"data_dir": str(tmp_path / "data"), "auth": "all"},
        monitoring={"quality_interval_seconds": 2, "trend_hours": 1},
        activity_levels={"levels": LEVELS},
        interest_tags={"categories": categories},
        behavior_preferences={"rules": [
            {"name": "click_frequency", "metric": "actions_per_active_day", "window_days": 7,
             "op": ">", "threshold": 1},
            {"name": LONG_PREF, "metric": "unique_item_ratio", "window_days": 30, "op": ">",
             "threshold": 0.7, "min_actions": 5}]})
    cfg = load_config(cfg_path, env={})
    token = api_token(cfg)
    sample = tmp_path / "sample"
    write_sample(SampleSpec(users=400, days=35, activity=0.5), sample)
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    # each port picked just before its worker binds it (worker 1's Kafka connections take
    # ephemeral ports too): the group finds the members wherever they listen
    w = [profile_worker(workers, cfg_path, i, free_port(), f"w{i}").start() for i in (1, 2)]
    for x in w:
        x.wait_healthy()
    assert wait_for(lambda: settled(w[0], token, 2), 60, what="two members")
    produce_events(cfg, sample / "events.jsonl", rate=4000, progress=None)

    def own(x) -> dict:
        return http_json(x.url("/dashboard/data?local=1"), timeout=5, token=token)[1]

    def steady():
        """Both workers' last two scans equal (every event in, every user sampled), a p99
        measured and a few trend points on each."""
        now = [own(x) for x in w]
        if not all(p["quality_scan"]["users"] and p["latency"]["ingest"]["p99"] and
                   len(p["trend"]["points"]) >= 3 for p in now):
            return None
        last = [p["trend"]["points"][-2:] for p in now]
        if any(a["users"] != b["users"] or a["levels"] != b["levels"] for a, b in last):
            return None
        return now
    parts = wait_for(steady, 120, interval=0.25, what="steady scans on both workers")
    assert parts, [own(x)["quality_scan"]["users"] for x in w]

    # the cluster's figures, asked of worker 1, are the sums of each worker's own
    assert http_json(w[0].url("/dashboard/data"))[0] == 401
    status, d = http_json(w[0].url("/dashboard/data"), timeout=10, token=token)
    assert status == 200 and d["complete"] and d["workers_shown"] == 2, d.get("workers")
    urls = {p["url"] for p in parts}
    assert {x["url"] for x in d["workers"]} == urls and all(x["error"] is None
                                                            for x in d["workers"])
    users = sum(p["quality_scan"]["users"] for p in parts)
    biz = d["quality_scan"]["business"]
    assert d["quality_scan"]["users"] == users
    assert biz["activity_levels"] == {str(k): summed(parts, "levels")[str(k)]
                                      for k in range(LEVELS)}
    assert biz["user_types"] == {"0": summed(parts, "types")["0"],
                                 "1": summed(parts, "types")["1"]}
    assert biz["behavior_preferences"] == {
        k: summed(parts, "preferences")[k] for k in ("click_frequency", LONG_PREF)}
    covered = sum(p["quality_scan"]["covered"] for p in parts)
    assert d["quality_scan"]["quality"]["coverage"] == pytest.approx(covered / users)
    assert d["trend"]["points"][-1]["users"] == users
    one = parts[1]["url"]
    status, d2 = http_json(w[0].url(f"/dashboard/data?worker={one}"), timeout=10, token=token)
    assert status == 200 and d2["workers_shown"] == 1 and \
        d2["quality_scan"]["users"] == parts[1]["quality_scan"]["users"]
    assert http_json(w[0].url("/dashboard/data?worker=http://nowhere:1"), token=token)[0] == 404

    # the page, asked of worker 1, with the token given in the fragment
    url = w[0].url("/dashboard") + "#token=" + token
    dom = headless(browser, "--virtual-time-budget=6000", "--dump-dom", url).stdout
    assert attr(dom, "state", "data-ready") == "1", dom[-3000:]
    state = re.search(r'<p id="state"[^>]*>([^<]*)</p>', dom).group(1)
    assert f"{users} users sampled" in state, state
    assert int(attr(dom, "state", "data-trend-points")) >= 3
    assert attr(dom, "state", "data-cut-labels") == "0"
    assert re.search(r'id="scope">all workers \(2 of 2\)<', dom)
    options = set(re.findall(r'<option value="([^"]+)"', dom))
    assert options == {"all"} | urls, options
    for chart in LINES + BARS:
        assert int(attr(dom, chart, "data-points") or 0) > 0, chart
    levels = json.loads(attr(dom, "c-levels", "data-values"))
    assert levels == biz["activity_levels"] and list(levels) == [str(k) for k in range(LEVELS)]
    assert json.loads(attr(dom, "c-types", "data-values")) == biz["user_types"]
    tags = json.loads(attr(dom, "c-tags", "data-values"))
    assert tags == dict(summed(parts, "tags").most_common(10)) and LONG_TAG in tags
    assert json.loads(attr(dom, "c-prefs", "data-values")) == biz["behavior_preferences"]
    assert f'<span class="label">{LONG_TAG}</span>' in dom          # whole, not cut
    assert f'<span class="label">{LONG_PREF}</span>' in dom
    assert set(json.loads(attr(dom, "c-pref-trend", "data-series"))) == \
        {"click_frequency", LONG_PREF}
    assert LONG_TAG in json.loads(attr(dom, "c-tags-trend", "data-series"))
    for u in urls:
        assert re.search(rf'<tr data-url="{re.escape(u)}">.*?<td>answering</td></tr>', dom), u
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', dom)   # no CDN

    # one worker chosen (?worker= preselects it in the page's selector): its own figures
    dom = headless(browser, "--virtual-time-budget=4000", "--dump-dom",
                   w[0].url(f"/dashboard?worker={one}#token={token}")).stdout
    instance = parts[1]["instance"]
    assert re.search(rf'id="scope">worker {instance} \({re.escape(one)}\)<', dom), dom[-3000:]
    assert json.loads(attr(dom, "c-levels", "data-values")) == \
        {str(k): parts[1]["quality_scan"]["levels"].get(str(k), 0) for k in range(LEVELS)}

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-cluster.png"
    shot.unlink(missing_ok=True)
    r = headless(browser, "--virtual-time-budget=6000", "--window-size=1280,1400",
                 f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 20_000, r.stderr[-2000:]
    print(f"dashboard screenshot: {shot} ({shot.stat().st_size:,} bytes)")
