"""Fault injection: chaos writes a control file, replicas whose app args enable it read it.

The writer's side (FaultSpec, write_faults, read_faults, clear_faults, control_path) imports nothing
heavy, so chaos can use it; the replica's side is FaultInjector, whose `apply()` runs on every request
through an app's ingress (http_api.FaultGate) and at the top of the Preprocessor's handler.

Off unless the app's args carry `faults` (stack/serve_config.py adds them only for a profile with
`fault_injection: true`): without them no injector exists and no request pays for one.

Control file: {"faults": [FaultSpec, ...]}. A missing file means no faults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stack.serving.models import PROJECT_ROOT
from stack.serving.settings import FaultSettings

# Relative to the project root as the replicas see it (stack.serving.models.PROJECT_ROOT).
DEFAULT_CONTROL_FILE = ".run/faults.json"
# How stale a replica's view of the control file may be; also how often a hang re-checks it.
POLL_S = 0.5
# The error contract's `type` for an injected error, and the error_class the request observer counts.
FAULT_KIND = "fault_injected"

log = logging.getLogger(__name__)


class FaultSpec(BaseModel):
    """One fault: what it does, and which requests it hits."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(min_length=1)  # who set it, e.g. the experiment's name; named in the error body
    kind: Literal["hang", "error", "delay"]
    app: str = Field(min_length=1)
    deployment: str | None = None  # None: every deployment of the app that runs the hook
    replica: str | None = None  # Serve's replica unique id; None: every replica
    share: float = Field(default=1.0, gt=0, le=1)  # of the matching requests, chosen at random
    status: int = Field(default=503, ge=500, le=599)  # kind error
    delay_ms: int = Field(default=0, ge=0)  # kind delay

    @model_validator(mode="after")
    def _delay_has_a_length(self) -> FaultSpec:
        if self.kind == "delay" and self.delay_ms == 0:
            raise ValueError("a delay fault needs delay_ms > 0")
        return self

    def matches(self, where: ReplicaIdentity) -> bool:
        return (self.app == where.app and self.deployment in (None, where.deployment)
                and self.replica in (None, where.replica))


class FaultFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: tuple[FaultSpec, ...] = ()


def control_path(control_file: str | os.PathLike[str] = DEFAULT_CONTROL_FILE) -> Path:
    """The control file: as given when absolute, else under the project root."""
    path = Path(control_file)
    return path if path.is_absolute() else PROJECT_ROOT / path


def write_faults(path: str | os.PathLike[str], specs: Iterable[FaultSpec]) -> None:
    """Replace the control file's faults, atomically: a replica reads the old list or the new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = FaultFile(faults=tuple(specs)).model_dump_json(indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(body + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_faults(path: str | os.PathLike[str]) -> list[FaultSpec]:
    """The control file's faults; none when it is missing. A malformed file raises ValueError naming it."""
    target = Path(path)
    try:
        text = target.read_text()
    except FileNotFoundError:
        return []
    try:
        return list(FaultFile.model_validate(json.loads(text)).faults)
    except (ValueError, ValidationError) as err:
        raise ValueError(f"fault control file {target} is invalid: {err}") from None


def clear_faults(path: str | os.PathLike[str]) -> None:
    """No faults: the control file removed (hung requests go on within POLL_S)."""
    Path(path).unlink(missing_ok=True)


class FaultInjected(Exception):
    """An injected error: FaultGate answers it, and an ingress maps it from a handler below it.

    Picklable with its fields, so it crosses a DeploymentHandle (Ray re-raises it in the caller as a
    subclass that reads these attributes from the original).
    """

    def __init__(self, fault_id: str, status: int) -> None:
        self.fault_id, self.status = fault_id, status
        self.message = f"fault injected: {fault_id} ({status})"
        super().__init__(fault_id, status)

    def __reduce__(self) -> tuple[type[FaultInjected], tuple[str, int]]:
        return type(self), (self.fault_id, self.status)


class ReplicaIdentity(NamedTuple):
    app: str
    deployment: str
    replica: str


def serve_identity() -> ReplicaIdentity | None:
    """This replica's app, deployment and unique id from Serve; None outside a replica.

    A context without a replica id is a test harness's stand-in, not a Serve replica: none, so unit
    tests that build the apps from stack/serve/cpu.yaml never meet a live stack's control file.
    """
    from ray import serve

    try:
        ctx = serve.get_replica_context()
    except Exception:  # RayServeException outside a replica: nothing can match
        return None
    replica = getattr(getattr(ctx, "replica_id", None), "unique_id", None)
    return ReplicaIdentity(ctx.app_name, ctx.deployment, replica) if replica else None


class FaultInjector:
    """A replica's view of the control file (re-read at most every POLL_S, and only when it changed)
    and the faults it applies to a request.

    Built when the app is built and pickled with it, so it holds no lock or open file; each replica
    unpickles its own. `identity` and `clock` are there for tests, which run without Serve.
    """

    def __init__(self, path: Path, identity: Callable[[], ReplicaIdentity | None] = serve_identity,
                 clock: Callable[[], float] = time.monotonic, poll_s: float = POLL_S,
                 rng: Callable[[], float] | None = None) -> None:
        self.path, self.identity, self.clock, self.poll_s, self.rng = path, identity, clock, poll_s, rng
        self._checked_at: float | None = None
        self._key: tuple[int, int, int] | None = None
        self._specs: tuple[FaultSpec, ...] = ()

    @classmethod
    def from_settings(cls, settings: FaultSettings) -> FaultInjector:
        return cls(control_path(settings.control_file))

    def specs(self) -> tuple[FaultSpec, ...]:
        """Every fault in the control file, as last read."""
        now = self.clock()
        if self._checked_at is not None and now - self._checked_at < self.poll_s:
            return self._specs
        self._checked_at = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._key, self._specs = None, ()
            return self._specs
        key = (st.st_mtime_ns, st.st_ino, st.st_size)  # a rename is a new inode, even within one tick
        if key != self._key:
            self._key = key
            try:
                self._specs = tuple(read_faults(self.path))
            except (OSError, ValueError) as err:
                # A bad file must not fail requests: it is logged once per version and means no faults.
                log.warning("ignoring the fault control file: %s", err)
                self._specs = ()
        return self._specs

    def active(self) -> tuple[FaultSpec, ...]:
        """The faults that match this replica."""
        specs = self.specs()
        if not specs:
            return ()
        where = self.identity()
        return () if where is None else tuple(s for s in specs if s.matches(where))

    async def apply(self) -> None:
        """Apply each matching fault that this request draws, in file order: a delay sleeps, a hang
        waits (the event loop free) until its spec leaves the file, an error raises FaultInjected."""
        for spec in self.active():
            if spec.share < 1 and (self.rng or random.random)() >= spec.share:
                continue
            if spec.kind == "delay":
                await asyncio.sleep(spec.delay_ms / 1000)
            elif spec.kind == "hang":
                while spec in self.active():
                    await asyncio.sleep(self.poll_s)
            else:
                raise FaultInjected(spec.id, spec.status)
