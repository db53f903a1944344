"""Names of the locust entries and the routes (SLOs) they count towards."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    task: str
    name: str  # the locust entry
    route: str  # the SLO's route


ENTRIES: dict[str, Entry] = {e.task: e for e in (
    Entry("chat", "/v1/chat/completions stream", "/v1/chat/completions"),
    Entry("completions", "/v1/completions", "/v1/completions"),
    Entry("embed", "/embed", "/embed"),
    Entry("embed_batch", "/embed batch", "/embed"),
    Entry("classify", "/classify", "/classify"),
    Entry("predict", "/predict", "/predict"),
)}
BY_NAME: dict[str, Entry] = {e.name: e for e in ENTRIES.values()}

# Streaming-chat figures, each its own locust entry of request type "LLM" (times in ms).
LLM_TYPE = "LLM"
TTFT = "chat TTFT"  # request sent to first content token
ITL = "chat ITL"  # every gap between two content chunks
TPOT = "chat TPOT"  # per request: (end - first token) / (output tokens - 1)
# Per LLM request (chat and completions): its end-to-end time, and its goodput reason, ok when good.
GOODPUT = "LLM goodput"
LLM_NAMES = (TTFT, ITL, TPOT, GOODPUT)
