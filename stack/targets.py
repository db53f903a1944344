"""Where the toolkit looks: the ops config's `targets`, each overridable from the environment.

The read-only tools (load tests, status, runbook diagnosis, preflight, the scorecard's soak) read
Serve, Prometheus, Alertmanager and the Ray dashboard at these URLs, so they work against a staging or
production cluster as well as the local stack. Auth headers come only from the environment, are sent
only to their own target, and are never printed: an error names the variable, not its value.

Mutating actions (chaos, runbook mitigations, `serveops tune`) act only on the local stack, and refuse
while any target points elsewhere; on a cluster the runbooks' Kubernetes steps act, and only against
the context the user names (K8S_CONTEXT).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from stack.config import Listen, OpsConfig

Kind = Literal["serve", "prometheus", "alertmanager", "ray_dashboard"]
KINDS: tuple[Kind, ...] = ("serve", "prometheus", "alertmanager", "ray_dashboard")
LOCAL = "local"  # a target's value in the ops config: the listener the local stack opens (listen:)

URL_ENV = {kind: f"SERVEOPS_{kind.upper()}_URL" for kind in KINDS}
HEADERS_ENV = {kind: f"SERVEOPS_{kind.upper()}_HEADERS" for kind in KINDS}
# Kubernetes steps of the runbooks run against this context and namespace; the names runbooks already use.
KUBE_ENV = {"kube_context": "K8S_CONTEXT", "kube_namespace": "K8S_NAMESPACE"}


class TargetError(ValueError):
    """A bad target setting, named by its variable (never by a header's value)."""


def overrides(env: Mapping[str, str]) -> dict[str, str]:
    """The `targets` entries the environment sets, by field name."""
    fields = {f"{kind}_url": URL_ENV[kind] for kind in KINDS} | KUBE_ENV
    return {name: env[var].strip() for name, var in fields.items() if env.get(var, "").strip()}


def headers(kind: Kind, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for one target: SERVEOPS_<KIND>_HEADERS='Authorization: Bearer ...; X-Scope-OrgID: t1'."""
    var = HEADERS_ENV[kind]
    raw = (os.environ if env is None else env).get(var, "")
    out: dict[str, str] = {}
    for i, item in enumerate(p.strip() for p in raw.split(";")):
        if not item:
            continue
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or not value.strip() or any(c.isspace() for c in name.strip()):
            raise TargetError(f"{var}: entry {i + 1} is not 'Name: value' (its value is not shown)")
        out[name.strip()] = value.strip()
    return out


def local_urls(listen: Listen) -> dict[Kind, str]:
    """The URLs the local stack listens on (the ops config's listen:), by target."""
    return {"serve": listen.serve_url, "prometheus": listen.url(listen.prometheus_port),
            "alertmanager": listen.url(listen.alertmanager_port), "ray_dashboard": listen.dashboard_url}


def loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_local(url: str, local_url: str) -> bool:
    """The URL is the local stack's listener: same port, same host (localhost and 127.0.0.1 alike).
    A loopback URL on another port is not: `kubectl port-forward` brings a cluster there."""
    a, b = urlsplit(url), urlsplit(local_url)
    same_host = a.hostname == b.hostname or (loopback(a.hostname or "") and loopback(b.hostname or ""))
    return same_host and a.port == b.port and a.scheme == b.scheme


def url_of(ops: OpsConfig, kind: Kind) -> str:
    return str(getattr(ops.targets, f"{kind}_url"))


def remote(ops: OpsConfig) -> dict[Kind, str]:
    """The targets that are not the local stack."""
    local = local_urls(ops.listen)
    return {k: url_of(ops, k) for k in KINDS if not is_local(url_of(ops, k), local[k])}


def describe(ops: OpsConfig) -> str:
    """One line naming every target, for the output of each tool that reads them."""
    t = ops.targets
    line = (f"Serve {t.serve_url}, Ray dashboard {t.ray_dashboard_url}, Prometheus {t.prometheus_url}, "
            f"Alertmanager {t.alertmanager_url}")
    if t.kube_context:
        line += f", Kubernetes {t.kube_context}/{t.kube_namespace}"
    return line + ("" if not remote(ops) else " (not the local stack)")


def refuse_remote(ops: OpsConfig, action: str) -> None:
    """Mutations go through the local stack's own APIs (its GCS, its deployed config): with any target
    pointed elsewhere they would act on one cluster and judge by another, so they stop here (exit 2).
    On a cluster, the runbooks' Kubernetes steps act, against the context named in K8S_CONTEXT."""
    away = remote(ops)
    if away:
        named = ", ".join(f"{URL_ENV[k]}={u}" for k, u in away.items())
        print(f"{action} acts only on the local stack, and the targets point elsewhere ({named}); "
              "unset them, or use the runbook's k8s- steps with K8S_CONTEXT=<context>", file=sys.stderr)
        raise SystemExit(2)
