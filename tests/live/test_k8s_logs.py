"""The Promtail pipeline shipped with the Kubernetes manifests, on a JSON log line the stack writes now."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from stack.local.cluster import RAY_LOGS
from stack.polling import eventually
from stack.serving.observability.tracing import TRACE_HEADER
from tests import promtail_stage

pytestmark = pytest.mark.live


def newest_line_with(trace_id: str, pattern: str) -> str | None:
    """The last line carrying trace_id in the most recently written replica log that has one."""
    logs = sorted((RAY_LOGS / "serve").glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in logs:
        for line in reversed(_lines(path)):
            if trace_id in line:
                return line
    return None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:  # rotated away meanwhile
        return []


def test_promtail_extracts_every_field_from_a_request_line(http: httpx.Client) -> None:
    # Sampled, whatever the stack's ratio: Serve's access log line carries the trace id of the replica
    # span it writes under, and an unsampled request has none current there.
    trace_id = secrets.token_hex(16)
    r = http.post("/embed", json={"text": "promtail"},
                  headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert r.status_code == 200, r.text
    assert r.headers[TRACE_HEADER] == trace_id
    # Serve buffers replica log records for a moment before writing them.
    line = eventually(lambda: newest_line_with(trace_id, "replica_embed_*.log"), timeout_s=30)
    assert line, f"no replica log line with trace_id {trace_id} under {RAY_LOGS / 'serve'}"
    cfg = promtail_stage.config()
    extracted = promtail_stage.extract(cfg, line)
    missing = set(promtail_stage.expressions(cfg)) - set(extracted)
    assert missing == set(), f"json stage finds no {sorted(missing)} in {line}"
    assert extracted["trace_id"] == trace_id
    assert extracted["route"] == "/embed"
    assert extracted["application"] == "embed"
    assert extracted["deployment"].endswith("Embedder")
    assert extracted["level"] == "INFO"
    assert promtail_stage.extracted_names_read(cfg) <= set(extracted)
