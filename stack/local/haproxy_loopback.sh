#!/bin/sh
# Ray 2.60 renders HAProxy's stats and Prometheus listeners as `bind *:8404` and `bind :9101` (every
# interface) with no setting for the host. Ray runs this as its HAProxy binary (RAY_SERVE_HAPROXY_BINARY_PATH,
# set by stack/levers.py): it puts every host-less bind of the config file on SERVEOPS_HAPROXY_BIND_HOST,
# then runs Ray's bundled HAProxy with the same arguments. Binds that name a host (Serve's own) stay.
set -eu
: "${SERVEOPS_HAPROXY_BINARY:?set by stack/levers.py}"
: "${SERVEOPS_HAPROXY_BIND_HOST:?set by stack/levers.py}"
cfg="" prev=""
for arg in "$@"; do
    if [ "$prev" = "-f" ]; then cfg="$arg"; fi
    prev="$arg"
done
if [ -n "$cfg" ] && [ -f "$cfg" ]; then
    sed -i -E "s/^([[:space:]]*bind[[:space:]]+)\*?:([0-9]+)([[:space:]]|\$)/\1${SERVEOPS_HAPROXY_BIND_HOST}:\2\3/" "$cfg"
fi
exec "$SERVEOPS_HAPROXY_BINARY" "$@"
