"""Load generators for the serveops stack."""
