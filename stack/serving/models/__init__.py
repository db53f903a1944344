"""Models that `make setup` builds locally, so nothing comes from a hub."""

from stack import ROOT

MODELS_DIR = ROOT / ".models"
TINY_LLM = MODELS_DIR / "tiny-llama"
SENTIMENT = MODELS_DIR / "sentiment"
TENANT_STORE = MODELS_DIR / "tenants"
