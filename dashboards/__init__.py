"""Grafana dashboards generated in Python (grafana-foundation-sdk) from stack/ops.yaml."""
