"""The Serve config is the replicas' only channel: nothing under stack/serving reads the ops config.

Statically: no module under stack/serving imports stack.config, stack.serve_config, stack.local,
stack.tools or stack.k8s, nor names ops.yaml in its code (a docstring may say it is not read).
At run time: tests/isolated_replica.py runs in a child process whose `stack` package is a copy of
stack/__init__.py and stack/serving alone (no ops.yaml, the other packages refused on import), builds
each non-LLM app from stack/serve/cpu.yaml as Serve does, and drives each ingress replica in-process;
a second run does the same with the config's args retuned, so the values the replicas enforce are
shown to come from the config.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import ROOT

FORBIDDEN = ("stack.config", "stack.serve_config", "stack.local", "stack.tools", "stack.k8s")
SERVING = ROOT / "stack" / "serving"
SERVE_CONFIG = ROOT / "stack" / "serve" / "cpu.yaml"
DRIVER = Path(__file__).with_name("isolated_replica.py")


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Module names an import statement or an importlib/__import__ call with a literal names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[:len(package) - node.level + 1]
            node_module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            node_module = node.module or ""
        # `from stack import config` imports stack.config
        return [node_module, *(f"{node_module}.{alias.name}" for alias in node.names)]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def _docstrings(tree: ast.AST) -> set[int]:
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, scopes) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def violations(serving: Path) -> list[str]:
    """What ties the serving code to the ops config: forbidden imports, and ops.yaml named in code."""
    root = serving.parent.parent
    found = []
    for path in sorted(serving.rglob("*.py")):
        rel = path.relative_to(root)
        tree = ast.parse(path.read_text(), str(rel))
        docstrings = _docstrings(tree)
        is_package = path.name == "__init__.py"
        module = ".".join((rel.parent if is_package else rel.with_suffix("")).parts)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and "ops.yaml" in node.value
                    and id(node) not in docstrings):
                found.append(f"{rel}:{node.lineno}: names ops.yaml")
            bad = [n for n in _imported(node, module, is_package)
                   if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
            if bad:
                found.append(f"{rel}:{node.lineno}: imports {bad[0]}")
    return found


def test_serving_code_never_reaches_for_the_ops_config() -> None:
    assert violations(SERVING) == []


@pytest.mark.parametrize("line", [
    "from stack.config import load",
    "import stack.local.daemons",
    "from stack import serve_config",
    "from ... import config",
    "importlib.import_module('stack.tools.cli')",
    "PATH = ROOT / 'stack' / 'ops.yaml'",
    "text = open(f'{ROOT}/stack/ops.yaml').read()",
])
def test_a_reach_for_the_ops_config_is_caught(tmp_path: Path, line: str) -> None:
    serving = tmp_path / "stack" / "serving"
    shutil.copytree(SERVING, serving, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(serving) == []
    module = serving / "observability" / "metrics.py"
    module.write_text(module.read_text() + f"\n{line}\n")
    assert len(violations(serving)) == 1


def isolated_tree(tmp: Path) -> Path:
    """A project root holding only what a replica runs: stack/__init__.py, stack/serving and the models."""
    assert (ROOT / ".models" / "tenants").is_dir(), "the models are missing: run `make setup`"
    (tmp / "stack").mkdir(parents=True)
    shutil.copy2(ROOT / "stack" / "__init__.py", tmp / "stack" / "__init__.py")
    shutil.copytree(SERVING, tmp / "stack" / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / ".models").symlink_to(ROOT / ".models")
    return tmp


def retuned(config: dict[str, Any]) -> dict[str, Any]:
    """The committed config with other limits and tiers, as an operator would set them."""
    out = copy.deepcopy(config)
    for app in out["applications"]:
        app["args"]["api"].update(max_text_chars=40, max_tenant_id_chars=7, max_features=8)
        if app["name"] == "predict":
            app["args"]["tenants"] = {"tiers": {"hooli": "vip", "acme": "gold"}, "default_tier": "basic"}
    return out


@pytest.fixture(scope="module", params=["committed", "retuned"])
def replica_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Serve config the replicas were built from, what the child process saw)."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    if request.param == "retuned":
        config = retuned(config)
    tmp = tmp_path_factory.mktemp(request.param)
    root = isolated_tree(tmp / "root")
    config_path, out = tmp / "serve.yaml", tmp / "report.json"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("SERVEOPS_CONFIG", "PYTHONPATH")}
    env.update(PYTHONPATH=str(root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(DRIVER), str(config_path), str(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return config, json.loads(out.read_text())


def app_args(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in config["applications"] if a["name"] == name)["args"]


def test_the_child_sees_no_ops_config(replica_run) -> None:
    _, seen = replica_run
    assert Path(seen["stack_root"]).name == "root" and not seen["ops_yaml_exists"]
    assert all("imported inside a replica" in why for why in seen["forbidden"].values()), seen["forbidden"]


def test_embed_replica_enforces_the_configs_limit(replica_run) -> None:
    config, seen = replica_run
    limit, embed = app_args(config, "embed")["api"]["max_text_chars"], seen["apps"]["embed"]
    assert embed["ok"] == {"status": 200, "vectors": 2}
    assert embed["spec_max_length"] == limit
    assert embed["over_limit"]["status"] == 422 and embed["over_limit"]["error"]["param"] == "text"


def test_classify_replica_enforces_the_configs_limit(replica_run) -> None:
    config, seen = replica_run
    limit, classify = app_args(config, "classify")["api"]["max_text_chars"], seen["apps"]["classify"]
    assert classify["ok"]["status"] == 200 and classify["ok"]["body"]["label"] == "positive"
    assert classify["spec_max_length"] == limit and classify["at_limit"] == 200
    over = classify["over_limit"]
    assert over["status"] == 422 and over["error"]["param"] == "text"
    assert f"at most {limit} characters" in over["error"]["message"]
    assert classify["not_json"]["status"] == 415 and classify["not_json"]["error"]["param"] == "Content-Type"


def test_predict_replica_labels_the_configs_tiers(replica_run) -> None:
    config, seen = replica_run
    tenants, predict = app_args(config, "predict")["tenants"], seen["apps"]["predict"]
    for tenant, got in predict["tenants"].items():
        tier = tenants["tiers"].get(tenant, tenants["default_tier"])
        assert got == {"status": 200, "tiers": [tier]}, tenant
    assert predict["long_tenant_id"]["status"] == 422
    assert predict["long_tenant_id"]["error"]["param"] == "serve_multiplexed_model_id"
    assert predict["too_many_features"]["status"] == 422
    assert predict["too_many_features"]["error"]["param"] == "features"
