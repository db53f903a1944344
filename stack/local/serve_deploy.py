"""Deploy a Serve config through the dashboard's REST API (what `serve deploy` does) and wait on it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

from stack import targets

FAILED_APP_STATES = {"DEPLOY_FAILED", "UNHEALTHY"}


@dataclass(frozen=True)
class DeploymentState:
    app: str
    app_status: str
    deployment: str
    status: str
    running: int
    target: int
    message: str


def client(dashboard_url: str) -> ServeSubmissionClient:
    return ServeSubmissionClient(dashboard_url, headers=targets.headers("ray_dashboard"))


def deploy(dashboard_url: str, config: dict[str, Any], timeout_s: float = 90) -> None:
    """Submit the config, retrying while the freshly started dashboard is not yet serving."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client(dashboard_url).deploy_applications(config)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def details(dashboard_url: str) -> dict[str, Any]:
    return client(dashboard_url).get_serve_details()


def states(serve_details: dict[str, Any]) -> list[DeploymentState]:
    rows = []
    for app_name, app in sorted((serve_details.get("applications") or {}).items()):
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            replicas = dep.get("replicas") or []
            rows.append(DeploymentState(
                app=app_name,
                app_status=app.get("status", "?"),
                deployment=dep_name,
                status=dep.get("status", "?"),
                running=sum(1 for r in replicas if r.get("state") == "RUNNING"),
                target=int(dep.get("target_num_replicas") or 0),
                message=(dep.get("message") or app.get("message") or "").strip(),
            ))
    return rows


def wait_running(dashboard_url: str, apps: list[str], timeout_s: float,
                 deployed_since: float = 0) -> dict[str, Any]:
    """Block until every named app is RUNNING; raise on a failed app or at the deadline.

    deployed_since: the wall time a config was submitted; an app still showing an older deploy has
    not taken the new config yet, so its RUNNING is the previous version's.
    """
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    current: dict[str, Any] = {}
    while time.monotonic() < deadline:
        current = details(dashboard_url).get("applications") or {}
        last = {name: (current.get(name) or {}).get("status", "NOT_STARTED") for name in apps}
        last = {name: status if (current.get(name) or {}).get("last_deployed_time_s", 0) >= deployed_since
                else "NOT_YET_APPLIED" for name, status in last.items()}
        failed = {n: s for n, s in last.items() if s in FAILED_APP_STATES}
        if failed:
            msgs = "; ".join(f"{n}: ...{(current[n].get('message') or '').strip()[-1500:]}" for n in failed)
            raise RuntimeError(f"applications failed: {failed}. {msgs}")
        if all(s == "RUNNING" for s in last.values()):
            return current
        time.sleep(2)
    # Serve explains a stuck deployment (e.g. replicas it cannot schedule) in its message.
    stuck = [f"{r.app}/{r.deployment}: {r.message}" for r in states({"applications": current})
             if r.app in apps and r.message and r.status != "HEALTHY"]
    raise TimeoutError(f"applications not RUNNING after {timeout_s:.0f}s: {last}"
                       + "".join(f"\n  {m[:500]}" for m in stuck))


def wait_absent(dashboard_url: str, apps: list[str] | None, timeout_s: float) -> None:
    """Block until the named apps (all apps for None) are deleted; deletion is asynchronous."""
    deadline = time.monotonic() + timeout_s
    while True:
        present = set(details(dashboard_url).get("applications") or {})
        remaining = present if apps is None else present & set(apps)
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications still present after {timeout_s:.0f}s: {sorted(remaining)}")
        time.sleep(1)


def delete_all(dashboard_url: str, timeout_s: float = 90) -> None:
    """Shut Serve down gracefully so replicas (and vLLM engines) run their shutdown hooks."""
    client(dashboard_url).delete_applications()
    wait_absent(dashboard_url, None, timeout_s)
