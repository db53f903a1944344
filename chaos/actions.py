"""What an experiment can do to the stack. Each action logs what it did."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos.context import Context
from chaos.load import Load, SquareWave, objective_s
from stack.local import monitoring, rollout, second_node, serve_deploy
from stack.local.ray_head import local_pid
from stack.serving import faults

Action = Callable[..., None]
ACTIONS: dict[str, Action] = {}


def action(fn: Action) -> Action:
    ACTIONS[fn.__name__] = fn
    return fn


def running_replica(ctx: Context) -> dict[str, Any]:
    """A RUNNING replica of the target, as Serve's details list it (replica_id, actor_name, pid)."""
    t = ctx.exp.target
    deployment = serve_deploy.details(ctx.ops.listen.dashboard_url)["applications"][t.app]["deployments"]
    running = [r for r in deployment[t.deployment]["replicas"] if r["state"] == "RUNNING"]
    if not running:
        raise RuntimeError(f"{t.app}/{t.deployment} has no RUNNING replica")
    return running[0]


def replica_pid(ctx: Context) -> int:
    """The pid of a RUNNING replica of the target, checked to be a Ray worker on this machine."""
    pid = int(running_replica(ctx)["pid"])
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    if b"ray::" not in cmdline and b"default_worker" not in cmdline:
        raise RuntimeError(f"pid {pid} is not a local Ray worker; refusing to signal it")
    return pid


@action
def signal_replica(ctx: Context, signal_name: str) -> None:
    pid = replica_pid(ctx)
    os.kill(pid, getattr(signal, signal_name))
    ctx.log(f"sent {signal_name} to {ctx.exp.target.app}/{ctx.exp.target.deployment} replica pid {pid}")


@action
def signal_gcs(ctx: Context, signal_name: str) -> None:
    """SIGSTOP: the GCS stops answering, as behind a network partition; SIGCONT: it is back."""
    pid = local_pid(f"--gcs_server_port={ctx.ops.listen.gcs_port}")
    if pid is None:
        raise RuntimeError("no local gcs_server")
    os.kill(pid, getattr(signal, signal_name))
    ctx.log(f"sent {signal_name} to gcs_server pid {pid}")


@action
def roll_out(ctx: Context, options: dict[str, Any] | None = None, app_args: dict[str, Any] | None = None,
             wait: bool = True) -> None:
    """Deploy the current config with the target's options or app args changed.

    wait=False submits it like `serve deploy` and returns: a release that never reaches RUNNING.
    """
    t = ctx.exp.target
    config = rollout.with_options(rollout.read(rollout.DEPLOYED), t.app, t.deployment, options or {})
    for entry in config["applications"]:
        if entry["name"] == t.app and app_args:
            entry["args"] = {**entry.get("args", {}), **app_args}
    what = f"{t.app}/{t.deployment} options {options or {}} args {app_args or {}}"
    if wait:
        rollout.roll_out(ctx.ops, config)
        ctx.log(f"rolled out {what}: RUNNING")
    else:
        rollout.submit(ctx.ops, config)
        ctx.log(f"submitted {what} without waiting")


@action
def add_app(ctx: Context, name: str, import_path: str, route_prefix: str,
            deployments: list[dict[str, Any]] | None = None) -> None:
    config = rollout.read(rollout.DEPLOYED)
    config["applications"] = [a for a in config["applications"] if a["name"] != name] + [
        {"name": name, "import_path": import_path, "route_prefix": route_prefix, "args": {},
         "deployments": deployments or []}]
    rollout.roll_out(ctx.ops, config)
    ctx.log(f"added app {name} at {route_prefix}: RUNNING")


@action
def restore_baseline(ctx: Context) -> None:
    rollout.roll_out(ctx.ops, ctx.baseline)
    ctx.log("restored the config deployed before the experiment: RUNNING")


@action
def start_load(ctx: Context, name: str, route: str, body: dict[str, Any], rate_per_s: float,
               headers: dict[str, str] | None = None, workers: int = 4, period_s: float | None = None,
               timeout_s: float = 30) -> None:
    url = f"{ctx.ops.listen.serve_url}{route}"
    kwargs = {"workers": workers, "timeout_s": timeout_s, "objective_s": objective_s(ctx.ops, route)}
    load = (SquareWave(url, body, headers or {}, rate_per_s, period_s=period_s, **kwargs) if period_s
            else Load(url, body, headers or {}, rate_per_s, **kwargs))
    ctx.loads[name] = load.start()
    shape = f"square wave, period {period_s:g}s" if period_s else "steady"
    ctx.log(f"started load {name}: {rate_per_s:g}/s to {route}, {shape}")


@action
def stop_load(ctx: Context, name: str) -> None:
    load = ctx.loads.pop(name, None)
    if load:
        load.stop()
        sent, failed = load.totals()
        ctx.log(f"stopped load {name}: {sent} sent, {failed} failed")


@action
def wait_target_killed(ctx: Context, timeout_s: float) -> None:
    """Block until the target's replica process is gone, and mark that moment as the fault."""
    pid = replica_pid(ctx)
    deadline = time.time() + timeout_s
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.2)
    if os.path.exists(f"/proc/{pid}"):
        raise RuntimeError(f"replica pid {pid} still alive after {timeout_s:g}s")
    ctx.mark("fault")
    ctx.log(f"replica pid {pid} was killed")


@action
def wait_target_status(ctx: Context, status: str, timeout_s: float) -> None:
    """Block until Serve itself reports the target deployment in `status`, and mark that moment as the
    fault: a bad release is a deployment that fails only once Serve gives up on its constructor
    retries (max_constructor_retry_count), which takes several replica starts after the submit."""
    t = ctx.exp.target
    deadline, seen = time.time() + timeout_s, "?"
    while time.time() < deadline:
        try:
            rows = serve_deploy.states(serve_deploy.details(ctx.ops.listen.dashboard_url))
            seen = next((r.status for r in rows if r.app == t.app and r.deployment == t.deployment), "absent")
        except Exception as err:  # the controller busy with the rollout: ask again
            seen = f"unavailable ({type(err).__name__})"
        if seen == status:
            ctx.mark("fault")
            ctx.log(f"{t.app}/{t.deployment} is {status}")
            return
        time.sleep(0.5)
    raise RuntimeError(f"{t.app}/{t.deployment} not {status} after {timeout_s:g}s (last seen: {seen})")


def fault_file(ctx: Context, app: str) -> Path:
    """The control file the app's replicas read, from the deployed Serve config: the replicas' own
    setting, so the chaos engine cannot write where no replica looks."""
    entry = next((a for a in rollout.read(rollout.DEPLOYED)["applications"] if a["name"] == app), None)
    setting = (entry or {}).get("args", {}).get("faults")
    if not setting:
        raise RuntimeError(f"fault injection is off for app {app!r} in the deployed Serve config; set "
                           "`fault_injection: true` in the profile of stack/ops.yaml and `make up` again")
    return faults.control_path(setting["control_file"])


@action
def inject_fault(ctx: Context, kind: str, app: str | None = None, deployment: str | None = None,
                 one_replica: bool = False, share: float = 1.0, status: int = 503, delay_ms: int = 0) -> None:
    """Add a fault for the replicas' fault hook: hang, error (a 5xx at a share) or delay. App and
    deployment default to the target; one_replica picks one RUNNING replica of it (a half-alive replica)."""
    app = app or ctx.exp.target.app
    deployment = deployment or (ctx.exp.target.deployment if one_replica else None)
    replica = running_replica(ctx)["replica_id"] if one_replica else None
    spec = faults.FaultSpec(id=ctx.exp.name, kind=kind, app=app, deployment=deployment, replica=replica,
                            share=share, status=status, delay_ms=delay_ms)
    path = fault_file(ctx, app)
    faults.write_faults(path, [*faults.read_faults(path), spec])
    if replica:
        ctx.fault_replica = replica
    where = f"{app}/{deployment or '*'}" + (f" replica {replica}" if replica else "")
    detail = {"error": f" {status} on {share:.0%}", "delay": f" {delay_ms} ms on {share:.0%}"}.get(kind, "")
    ctx.log(f"injected fault {kind}{detail} into {where}")


@action
def clear_faults(ctx: Context) -> None:
    """Remove this experiment's faults (only its own) from every app's control file."""
    paths = {fault_file(ctx, a["name"]) for a in rollout.read(rollout.DEPLOYED)["applications"]
             if (a.get("args") or {}).get("faults")}
    for path in paths:
        kept = [f for f in faults.read_faults(path) if f.id != ctx.exp.name]
        faults.write_faults(path, kept)
    ctx.log(f"cleared the faults of {ctx.exp.name}")


@action
def drop_metric(ctx: Context, name: str) -> None:
    """Prometheus drops one metric of Ray's at scrape time: what a dashboard sees after an upstream rename."""
    monitoring.drop_metric(ctx.ops, name)
    ctx.log(f"Prometheus now drops {name} from Ray's targets")


@action
def restore_metrics(ctx: Context) -> None:
    monitoring.restore_metrics(ctx.ops)
    ctx.log("Prometheus scrapes every metric of Ray's again")


@action
def set_second_node_link(ctx: Context, up: bool) -> None:
    """Cut or restore the veth link between the head and the second node: a real partition."""
    second_node.set_link(up)
    ctx.log(f"{'restored' if up else 'cut'} the link {second_node.HOST_IF} to the second node")


@action
def sleep(ctx: Context, seconds: float) -> None:
    ctx.log(f"waiting {seconds:g}s")
    time.sleep(seconds)
