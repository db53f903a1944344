"""Models that `make setup` builds locally, so nothing comes from a hub."""

from pathlib import Path

# The project root as replicas see it (this repo, or its copy in the image): relative model paths in
# the Serve config resolve against it. Computed here, not imported from `stack`, so that the serving
# code depends on nothing of the operating side.
PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODELS_DIR = PROJECT_ROOT / ".models"
TINY_LLM = MODELS_DIR / "tiny-llama"
SENTIMENT = MODELS_DIR / "sentiment"
TENANT_STORE = MODELS_DIR / "tenants"
