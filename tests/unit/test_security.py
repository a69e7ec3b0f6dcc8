"""Security review checks over the source: nothing from the network or a file is unpickled,
evaluated or executed; YAML is only safe-loaded; HTTP listens on localhost by default."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from features.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("features", "streams", "deploy") for p in (ROOT / d).rglob("*.py"))
BANNED_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "jsonpickle"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            out += [f"imports {n}" for n in names if n.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else ""
            if name in BANNED_CALLS:
                out.append(f"calls {name}()")
            if isinstance(f, ast.Attribute) and name in ("load", "load_all", "unsafe_load") and \
                    isinstance(f.value, ast.Name) and f.value.id == "yaml":
                out.append(f"calls yaml.{name}() (use safe_load)")
            if any(k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value
                   for k in node.keywords):
                out.append("runs a subprocess with shell=True")
    return [f"{path.relative_to(ROOT)}:{v}" for v in out]


def test_no_pickle_eval_exec_or_unsafe_yaml():
    assert len(SOURCES) > 30
    found = [v for p in SOURCES for v in _violations(p)]
    assert not found, found


def test_http_listens_on_localhost_by_default():
    cfg = parse_config({}, env={})
    assert cfg.worker.web_host == "127.0.0.1"


def test_config_cannot_construct_objects(tmp_path):
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    p.write_text(f"worker: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(p, env={})
    assert not marker.exists()
