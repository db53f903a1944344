"""A replica whose memory grows with every request until Ray's memory monitor kills it."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.requests import Request


@serve.deployment(name="MemoryHog")
class MemoryHog:
    def __init__(self) -> None:
        self.held: list[bytes] = []
        self.held_mb = 0

    async def __call__(self, request: Request) -> dict[str, Any]:
        mb = int((await request.json()).get("mb", 256))
        self.held.append(b"\x01" * (mb << 20))  # written, so resident: zero pages would not count
        self.held_mb += mb
        return {"held_mb": self.held_mb}


def app(args: dict[str, Any]) -> Any:
    return MemoryHog.bind()
