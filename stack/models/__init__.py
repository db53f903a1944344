"""Models that `make setup` builds locally, so nothing comes from a hub."""
