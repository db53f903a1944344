"""`make dashboards`: render the dashboard specs to Grafana 11 JSON with grafana-foundation-sdk.

Writes dashboards/json/<uid>.json (committed; `--check` fails on drift), Grafana provisioning
files (dashboards/provisioning/), and Kubernetes ConfigMaps labelled grafana_dashboard: "1"
(dashboards/k8s/) for Grafana's sidecar.
"""

from __future__ import annotations

import argparse
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
from dashboards.spec import DashboardSpec, PanelSpec
from stack import ROOT
from stack.config import OpsConfig, load

OUT = ROOT / "dashboards"
JSON_DIR = OUT / "json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
VARIABLE_QUERIES = {
    "application": "label_values(ray_serve_deployment_replica_healthy, application)",
    "deployment":
        'label_values(ray_serve_deployment_replica_healthy{application=~"$application"}, deployment)',
    "model": "label_values(ray_vllm_num_requests_running, model_name)",
}


def panel(spec: PanelSpec, runbook_base: str):
    builder = (stat.Panel() if spec.kind == "stat" else timeseries.Panel().line_width(1).fill_opacity(10))
    builder = builder.title(spec.title).description(spec.description).unit(spec.unit).datasource(DATASOURCE)
    builder = builder.height(8).span(12)
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        builder = builder.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref).datasource(DATASOURCE))
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
    for name in spec.variables:
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
        configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"{spec.uid}-dashboard", "labels": {"grafana_dashboard": "1"}},
                     "data": {f"{spec.uid}.json": text}}
        files[OUT / "k8s" / f"{spec.uid}-configmap.yaml"] = yaml.safe_dump(configmap, sort_keys=False)
    provider = {"apiVersion": 1, "providers": [{
        "name": "serveops", "folder": "serveops", "type": "file", "disableDeletion": False,
        "allowUiUpdates": False, "options": {"path": "/var/lib/grafana/dashboards/serveops"}}]}
    datasource = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": "prometheus", "access": "proxy",
        "url": ops.listen.url(ops.listen.prometheus_port), "isDefault": True}]}
    files[OUT / "provisioning" / "dashboards.yaml"] = yaml.safe_dump(provider, sort_keys=False)
    files[OUT / "provisioning" / "datasources.yaml"] = yaml.safe_dump(datasource, sort_keys=False)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file drifted")
    args = parser.parse_args()
    files = rendered(load())
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in files.items()
                 if not p.exists() or p.read_text() != text]
        if stale:
            print("drifted, run `make dashboards`: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    panels = sum(len(s.panels) for s in all_dashboards(load()))
    print(f"wrote {len(all_dashboards(load()))} dashboards, {panels} panels, under {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
