"""What runs inside Serve replicas: the apps, their deployments, schemas, error contract and models.

Every setting reaches it through the generated Serve config (application args, user_config); it
never reads stack/ops.yaml, so `serve deploy stack/serve/<profile>.yaml` is the whole description.
"""

