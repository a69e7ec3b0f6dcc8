"""The Docker, Compose, Kubernetes and Grafana files agree with the config, the code and each
other. Docker cannot run on these machines, so nothing here builds or applies them
(docs/OPERATIONS.md); test_manifest_validators.py runs the ecosystem's validators on them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from features.config import ENV_OVERRIDES, ProfileConfig, parse_config
from streams.monitoring.monitor import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[3]
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
        assert cfg.worker.web_host == "0.0.0.0" and cfg.worker.auth == "all"
    assert len(host_ports) == len(workers)
    # the broker's log dir is on a volume, as the workers' state is
    mounts = dict(v.split(":") for v in svc["kafka"]["volumes"])
    assert kafka["KAFKA_LOG_DIRS"] in mounts.values()
    assert set(mounts) <= set(doc["volumes"])


def k8s_docs(name: str) -> dict[str, dict]:
    return {d["kind"] + "/" + d["metadata"]["name"]: d
            for d in yaml.safe_load_all((ROOT / "deploy/k8s" / name).read_text()) if d}


def k8s_config() -> ProfileConfig:
    return parse_config(yaml.safe_load(k8s_docs("profiles.yaml")["ConfigMap/profiles-config"]
                                       ["data"]["profile_config.yaml"]), env={})


def test_kubernetes_statefulset_service_probes_and_config():
    docs = k8s_docs("profiles.yaml")
    cfg = k8s_config()
    assert cfg.worker.web_host == "0.0.0.0" and cfg.worker.auth == "all"
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


def test_kubernetes_kafka_is_the_broker_the_config_names():
    """kafka.yaml's one KRaft node is at the address profiles.yaml's ConfigMap names."""
    docs = k8s_docs("kafka.yaml")
    cfg = k8s_config()
    [url] = cfg.kafka.broker.split(";")
    host, port = re.fullmatch(r"kafka://([\w.-]+):(\d+)", url).groups()
    pod, service_name = host.split(".")
    assert {f"Service/{service_name}", "StatefulSet/kafka"} <= set(docs), (url, list(docs))
    svc, sts = docs[f"Service/{service_name}"], docs["StatefulSet/kafka"]
    # a StatefulSet's pod N is <name>-N.<serviceName> through its headless Service
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == service_name
    assert pod == f"{sts['metadata']['name']}-0"
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"] \
        == sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"] != k8s_docs("profiles.yaml")["StatefulSet/profiles"][
        "spec"]["selector"]["matchLabels"]                      # the workers' Services miss it
    pod_spec = sts["spec"]["template"]["spec"]
    [c] = pod_spec["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    svc_ports = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert int(port) in svc_ports, (url, svc_ports)
    assert container_ports[svc_ports[int(port)]] == int(port)
    env = {e["name"]: e["value"] for e in c["env"]}
    # clients are sent on to the advertised address: the same one
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{host}:{port}"
    assert f"PLAINTEXT://:{port}" in env["KAFKA_LISTENERS"].split(",")
    # KRaft, one node: broker and controller, the only voter is this pod's controller port
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert sts["spec"]["replicas"] == 1
    node, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    voter_host, voter_port = voter.rsplit(":", 1)
    assert node == env["KAFKA_NODE_ID"] and voter_host == host
    assert int(voter_port) in svc_ports, (voter, svc_ports)
    assert container_ports[svc_ports[int(voter_port)]] == int(voter_port)
    assert f"CONTROLLER://:{voter_port}" in env["KAFKA_LISTENERS"].split(",")
    # one node holds one copy: neither the workers' topics nor Kafka's own may ask for more
    assert cfg.kafka.replication <= sts["spec"]["replicas"], \
        f"kafka.replication {cfg.kafka.replication} > kafka.yaml's {sts['spec']['replicas']} node"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"):
        assert int(env[key]) <= sts["spec"]["replicas"], key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"    # workers create topics
    # the image makes every KAFKA_* variable a server property: no Service link variables
    assert pod_spec["enableServiceLinks"] is False
    # the log dirs on the pod's volume claim, and a readiness probe
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert env["KAFKA_LOG_DIRS"].startswith(mounts[claim].rstrip("/") + "/")
    assert c["readinessProbe"]


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
