"""Prometheus recording and alerting rules, generated from stack/ops.yaml."""
