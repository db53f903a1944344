"""The local stack: Ray head, second node, Redis, Prometheus, Alertmanager, deploys and rollbacks.

Standard library only at import: `make setup` runs stack.local.bootstrap before the venv exists.
"""
