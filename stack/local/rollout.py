"""Roll a Serve config out, keep the last one that reached RUNNING, and roll back to it.

`make up`, runbook mitigations and chaos experiments all deploy through here, so
.run/serve-config.last-good.yaml is always the newest config that served.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from stack import serve_config
from stack.config import OpsConfig
from stack.local import daemons, serve_deploy

DEPLOYED = daemons.RUN_DIR / "serve-config.yaml"
LAST_GOOD = daemons.RUN_DIR / "serve-config.last-good.yaml"


def read(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def submit(ops: OpsConfig, config: dict[str, Any]) -> float:
    """`serve deploy`: record the config as deployed and hand it to Serve; returns when it was sent."""
    daemons.RUN_DIR.mkdir(exist_ok=True)
    DEPLOYED.write_text(serve_config.render(config))
    submitted = time.time() - 1  # the controller stamps the deploy; allow for rounding
    serve_deploy.deploy(ops.listen.dashboard_url, config)
    return submitted


def roll_out(ops: OpsConfig, config: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
    """Deploy, wait until every app is RUNNING, then keep the config as the last good one.

    Raises RuntimeError (an app failed) or TimeoutError; the last good config is then untouched.
    """
    submitted = submit(ops, config)
    apps = serve_deploy.wait_running(ops.listen.dashboard_url, [a["name"] for a in config["applications"]],
                                     timeout_s, deployed_since=submitted)
    shutil.copyfile(DEPLOYED, LAST_GOOD)
    return apps


def rollback(ops: OpsConfig, timeout_s: float = 300) -> dict[str, Any]:
    if not LAST_GOOD.exists():
        raise FileNotFoundError(f"no last good config at {LAST_GOOD}; deploy one with `make up`")
    return roll_out(ops, read(LAST_GOOD), timeout_s)


def deployment_of(config: dict[str, Any], app: str, deployment: str) -> dict[str, Any]:
    """The deployment's entry in a Serve config, created when the app lists none for it yet."""
    for entry in config["applications"]:
        if entry["name"] == app:
            deployments = entry.setdefault("deployments", [])
            found = next((d for d in deployments if d["name"] == deployment), None)
            if found is None:
                found = {"name": deployment}
                deployments.append(found)
            return found
    raise KeyError(f"no application {app!r} in the deployed config")


def with_options(config: dict[str, Any], app: str, deployment: str,
                 options: dict[str, Any]) -> dict[str, Any]:
    """A copy of config with the deployment's options set; dotted keys reach into nested ones
    (autoscaling_config.downscale_delay_s)."""
    out = copy.deepcopy(config)
    target = deployment_of(out, app, deployment)
    for key, value in options.items():
        *parents, leaf = key.split(".")
        node = target
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out
