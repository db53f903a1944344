"""Under direct ingress (the haproxy_ingress lever), name an app's root route as Serve's proxy does.

With HAProxy in front, each ingress replica matches the request against its own ASGI routes
(`Replica._determine_http_route`) for Serve's HTTP metrics and access log. An app's root route ("/"
under the prefix /embed) comes back from Ray 2.60's matcher as "": it matches `/embed` only through
the slash it adds for Starlette's redirect and then trims the slash off. So /embed, /classify and
/predict would be counted as route="" where the proxy says "/embed", and every per-route SLO rule
and dashboard would see no traffic. An empty name becomes the route prefix; any other stays Ray's.
"""

from __future__ import annotations

from typing import Any

from ray.serve._private.replica import Replica

_PATCHED = "_serveops_root_route"


def name_root_route() -> None:
    """Idempotent: each app module calls it at import, in every replica process."""
    if getattr(Replica, _PATCHED, False):
        return
    matched = Replica._determine_http_route

    def determine(self: Any, scope: Any) -> str:
        return matched(self, scope) or (self._route_prefix or "")

    Replica._determine_http_route = determine  # type: ignore[method-assign]
    setattr(Replica, _PATCHED, True)
