"""serveops reference stack: Ray Serve + vLLM, configured from stack/ops.yaml."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
