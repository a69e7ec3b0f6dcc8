"""The Docker, Compose, Kubernetes and Grafana files agree with the config and the code. Docker
cannot run on these machines, so nothing here builds or applies them (docs/OPERATIONS.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from features.config import ENV_OVERRIDES, parse_config
from streams.monitoring import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = parse_config(yaml.safe_load((ROOT / "profile_config.yaml").read_text()),
                       base_dir=ROOT, env={})
ENV_KNOWN = set(ENV_OVERRIDES) | {"PROFILES_API_TOKEN", "PROFILES_CONFIG",
                                  "PROFILES_EVENT_LOOP"}


def test_dockerfile():
    text = (ROOT / "deploy/docker/Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", text, re.M)
    assert f"EXPOSE {DEFAULT.worker.web_port}" in text
    assert f"127.0.0.1:{DEFAULT.worker.web_port}/health" in text
    for path in ("features", "streams", "deploy", "pyproject.toml", "profile_config.yaml"):
        assert re.search(rf"^COPY .*{re.escape(path)}", text, re.M), path
        assert (ROOT / path).exists()
    env = dict(re.findall(r"(PROFILES_[A-Z_]+)=(\S+)", text))
    assert set(env) <= ENV_KNOWN and env["PROFILES_WEB_HOST"] == "0.0.0.0"
    assert env["PROFILES_WORKER_AUTH"] == "all"          # bound beyond localhost
    assert '"worker"' in text and "--web-port" in text


def test_compose_kafka_kraft_and_workers():
    doc = yaml.safe_load((ROOT / "deploy/docker/docker-compose.yml").read_text())
    svc = doc["services"]
    kafka = svc["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]
    listener = re.search(r"PLAINTEXT://(\w+):(\d+)", kafka["KAFKA_ADVERTISED_LISTENERS"])
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"   # workers create topics
    workers = {k: v for k, v in svc.items() if k.startswith("worker-")}
    assert len(workers) >= 2
    host_ports = set()
    for name, w in workers.items():
        env = w["environment"]
        assert set(env) <= ENV_KNOWN, set(env) - ENV_KNOWN
        assert env["PROFILES_BROKER_URL"] == f"kafka://{listener.group(1)}:{listener.group(2)}"
        assert env["PROFILES_ADVERTISED_HOST"] == name          # routing between workers
        port = w["command"][w["command"].index("--web-port") + 1]
        host, container = w["ports"][0].split(":")
        assert container == port
        host_ports.add(host)
        assert w["volumes"][0].endswith(":" + env["PROFILES_DATA_DIR"])
        # the environment makes a valid config
        cfg = parse_config({}, env={k: v for k, v in env.items() if k in ENV_OVERRIDES})
        assert cfg.compat == "kafka" and cfg.worker.web_host == "0.0.0.0"
        assert cfg.worker.auth == "all"
    assert len(host_ports) == len(workers)


def test_kubernetes_statefulset_service_probes_and_config():
    docs = {d["kind"] + "/" + d["metadata"]["name"]: d
            for d in yaml.safe_load_all((ROOT / "deploy/k8s/profiles.yaml").read_text())}
    cfg = parse_config(yaml.safe_load(docs["ConfigMap/profiles-config"]["data"]
                                      ["profile_config.yaml"]), env={})
    assert cfg.compat == "kafka" and cfg.worker.web_host == "0.0.0.0"
    assert cfg.worker.auth == "all"
    assert cfg.kafka.topics == DEFAULT.kafka.topics
    sts = docs["StatefulSet/profiles"]
    headless = docs[f"Service/{sts['spec']['serviceName']}"]
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["replicas"] <= cfg.kafka.partitions
    c = sts["spec"]["template"]["spec"]["containers"][0]
    port = c["ports"][0]["containerPort"]
    assert port == cfg.worker.web_port == int(c["args"][c["args"].index("--web-port") + 1])
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert mounts[claim] == cfg.worker.data_dir                # RocksDB on the pod's volume
    env = {e["name"]: e for e in c["env"]}
    assert set(env) - {"POD_NAME"} <= ENV_KNOWN
    assert "profiles-headless" in env["PROFILES_ADVERTISED_HOST"]["value"]
    assert env["PROFILES_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] in \
        {n.split("/")[1] for n in docs if n.startswith("Secret/")}
    for svc in (d for n, d in docs.items() if n.startswith("Service/")):
        assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    ann = sts["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/path"] == "/metrics" and int(ann["prometheus.io/port"]) == port


def test_grafana_dashboard_uses_exposed_metrics():
    dash = json.loads((ROOT / "deploy/grafana/dashboard.json").read_text())
    exposed = set(METRIC_NAMES)
    for n in METRIC_NAMES:      # counters and histograms gain suffixes in the exposition
        exposed |= {n + "_total", n + "_bucket", n + "_sum", n + "_count"}
    used = set()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            used |= set(re.findall(r"\b((?:profiles|process)_[a-z_]+)", t["expr"]))
    assert used and used <= exposed, used - exposed
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for what in ("lag", "latency", "dead letters", "quality", "activity levels", "user types",
                 "interest tags", "memory"):
        assert what in titles, what
