"""The deployment manifests pass the ecosystem's own validators, run offline as a user would run
them: kubernetes-validate (the Kubernetes API schemas, strict: an unknown field fails),
check-jsonschema (the compose specification it vendors) and hadolint (the Dockerfile). They come
from the `test` extra and are found next to this Python. Each validator is also shown a broken
copy, so a validator that stopped checking would fail here too. And the Kafka image of both
cluster manifests is the Kafka the embedded broker runs (deploy/broker/pom.xml)."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
# a Kubernetes version whose schemas kubernetes-validate ships (`kubernetes-validate --help`)
K8S_VERSION = "1.34.0"
K8S_MANIFESTS = ("deploy/k8s/kafka.yaml", "deploy/k8s/profiles.yaml")
COMPOSE = "deploy/docker/docker-compose.yml"
DOCKERFILE = "deploy/docker/Dockerfile"
POM = ROOT / "deploy/broker/pom.xml"
KAFKA_IMAGE = "apache/kafka"


def run(tool: str, *args: str) -> tuple[int, str]:
    exe = BIN / tool
    assert exe.is_file(), f"{exe} is missing: pip install -e '.[test]'"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, stdin=subprocess.DEVNULL)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def kubernetes_validate(path: Path | str) -> tuple[int, str]:
    return run("kubernetes-validate", "--strict", "--kubernetes-version", K8S_VERSION, str(path))


def compose_validate(path: Path | str) -> tuple[int, str]:
    return run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))


def hadolint(path: Path | str, tmp_path: Path) -> tuple[int, str]:
    # its own config, so that no hadolint.yaml of the machine's can relax it: every finding
    # fails, down to style; inline `# hadolint ignore=` pragmas (with a reason) still count
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")
    return run("hadolint", "--config", str(config), "--no-color", str(path))


@pytest.mark.parametrize("manifest", K8S_MANIFESTS)
def test_kubernetes_manifests_match_the_api_schemas(manifest):
    code, out = kubernetes_validate(manifest)
    assert code == 0, out
    # a kind it has no schema for is only a warning: every document must have been checked
    docs = [d for d in yaml.safe_load_all((ROOT / manifest).read_text()) if d]
    passed = [line for line in out.splitlines() if " passed for resource " in line]
    assert len(passed) == len(docs), out


def test_compose_file_matches_the_compose_specification():
    code, out = compose_validate(COMPOSE)
    assert code == 0, out


def test_dockerfile_passes_hadolint(tmp_path):
    code, out = hadolint(DOCKERFILE, tmp_path)
    assert code == 0, out


def _break(src: str, old: str, new: str, dest: Path) -> Path:
    text = (ROOT / src).read_text()
    assert old in text, (src, old)
    dest.write_text(text.replace(old, new, 1))
    return dest


def test_validators_reject_broken_copies(tmp_path):
    """The same calls as above on copies with one fault each must fail and name the fault."""
    sts = _break("deploy/k8s/kafka.yaml", "  serviceName: kafka\n",
                 "  serviceName: kafka\n  replica: 1\n", tmp_path / "kafka.yaml")
    code, out = kubernetes_validate(sts)
    assert code != 0 and "'replica'" in out and "unexpected" in out, out

    compose = _break(COMPOSE, 'ports: ["6066:6066"]', 'ports: "6066:6066"',
                     tmp_path / "docker-compose.yml")
    code, out = compose_validate(compose)
    assert code != 0 and "is not of type 'array'" in out, out

    dockerfile = _break(DOCKERFILE, "WORKDIR /app\n", "WORKDIR app\n", tmp_path / "Dockerfile")
    code, out = hadolint(dockerfile, tmp_path)
    assert code != 0 and "DL3000" in out, out


def pom_kafka_version() -> str:
    assert POM.is_file(), f"{POM} is missing: it pins the embedded broker's Kafka"
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version, f"{POM} has no <kafka.version> property"
    return version.strip()


def test_cluster_manifests_run_the_embedded_brokers_kafka_version():
    version = pom_kafka_version()
    compose = yaml.safe_load((ROOT / COMPOSE).read_text())
    images = {"docker-compose.yml " + name: svc["image"]
              for name, svc in compose["services"].items()
              if svc.get("image", "").split(":")[0] == KAFKA_IMAGE}
    for doc in yaml.safe_load_all((ROOT / "deploy/k8s/kafka.yaml").read_text()):
        if doc and doc["kind"] == "StatefulSet":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                images[f"kafka.yaml {doc['metadata']['name']}/{c['name']}"] = c["image"]
    assert any(k.startswith("docker-compose.yml") for k in images), images
    assert any(k.startswith("kafka.yaml") for k in images), images
    wrong = {k: image for k, image in images.items() if image != f"{KAFKA_IMAGE}:{version}"}
    assert not wrong, f"{POM.relative_to(ROOT)} has kafka.version {version}; these differ: {wrong}"
