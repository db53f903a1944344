"""`make dashboards`: render the dashboard specs to Grafana 11 JSON with grafana-foundation-sdk.

Writes dashboards/json/<uid>.json and Grafana's provisioning files (dashboards/provisioning/), all
committed; `--check` fails on drift. The Kubernetes ConfigMaps are built from the JSON (stack/k8s/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from dashboards.catalog import all_dashboards
from dashboards.spec import APP, CLUSTER, DashboardSpec, PanelSpec
from stack import artifacts, cluster_labels
from stack.artifacts import DASHBOARDS_DIR as JSON_DIR
from stack.artifacts import PROVISIONING_DIR
from stack.config import OpsConfig, load

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# up{job="ray"} carries the cluster labels on every Ray target (stack/k8s/monitoring.py relabels them).
VARIABLE_QUERIES = {
    "cluster": f'label_values(up{{job="ray"}}, {cluster_labels.CLUSTER})',
    "namespace":
        f'label_values(up{{job="ray",{cluster_labels.CLUSTER}=~"$cluster"}}, {cluster_labels.NAMESPACE})',
    "application": f"label_values(ray_serve_deployment_replica_healthy{{{CLUSTER}}}, application)",
    "deployment": f"label_values(ray_serve_deployment_replica_healthy{{{APP}}}, deployment)",
    "model": f"label_values(ray_vllm_num_requests_running{{{CLUSTER}}}, model_name)",
}
CLUSTER_VARIABLES = ("cluster", "namespace")  # every dashboard's, before its own


def panel(spec: PanelSpec, runbook_base: str):
    builder = (stat.Panel() if spec.kind == "stat" else timeseries.Panel().line_width(1).fill_opacity(10))
    builder = builder.title(spec.title).description(spec.description).unit(spec.unit).datasource(DATASOURCE)
    builder = builder.height(8).span(12)
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        target = (prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
                  .datasource(DATASOURCE))
        builder = builder.with_target(target.exemplar(True) if query.exemplar else target)
    if spec.runbook:
        builder = builder.links([dashboard.DashboardLink(f"Runbook: {spec.runbook}")
                                 .url(f"{runbook_base}/{spec.runbook}.md").target_blank(True)])
    if spec.kind != "stat":
        builder = builder.legend(common_builders.VizLegendOptions().show_legend(True)
                                 .display_mode(common.LegendDisplayMode.LIST)
                                 .placement(common.LegendPlacement.BOTTOM))
    return builder


def variable(name: str):
    return (dashboard.QueryVariable(name).label(name).datasource(DATASOURCE).query(VARIABLE_QUERIES[name])
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True)
            .include_all(True).all_value(".*"))


def build(spec: DashboardSpec, runbook_base: str) -> dict:
    board = (dashboard.Dashboard(spec.title).uid(spec.uid).description(spec.description)
             .tags(list(spec.tags)).refresh("30s").time("now-1h", "now").timezone("browser")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Data source")
                            .type("prometheus")))
    for name in (*CLUSTER_VARIABLES, *spec.variables):
        board = board.with_variable(variable(name))
    for p in spec.panels:
        board = board.with_panel(panel(p, runbook_base))
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))


def rendered(ops: OpsConfig) -> dict[Path, str]:
    """Every file `make dashboards` writes, by path."""
    base = ops.observability.runbook_url_base.rstrip("/")
    files: dict[Path, str] = {}
    for spec in all_dashboards(ops):
        text = json.dumps(build(spec, base), indent=2, sort_keys=True) + "\n"
        files[JSON_DIR / f"{spec.uid}.json"] = text
    provider = {"apiVersion": 1, "providers": [{
        "name": "serveops", "folder": "serveops", "type": "file", "disableDeletion": False,
        "allowUiUpdates": False, "options": {"path": "/var/lib/grafana/dashboards/serveops"}}]}
    datasource = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": "prometheus", "access": "proxy",
        "url": ops.listen.url(ops.listen.prometheus_port), "isDefault": True}]}
    head = artifacts.header("dashboards/generate.py")
    files[PROVISIONING_DIR / "dashboards.yaml"] = head + yaml.safe_dump(provider, sort_keys=False)
    files[PROVISIONING_DIR / "datasources.yaml"] = head + yaml.safe_dump(datasource, sort_keys=False)
    return files


def main(argv: list[str] | None = None) -> int:
    ops = load()
    return artifacts.emit("dashboards", lambda: rendered(ops), owned=(JSON_DIR, PROVISIONING_DIR), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
