"""What an experiment's actions and probes share while it runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.experiment import Experiment, Mode
from chaos.load import Load
from stack.config import OpsConfig


@dataclass
class Context:
    ops: OpsConfig
    exp: Experiment
    mode: Mode
    baseline: dict[str, Any]  # the Serve config deployed before the experiment
    load: Load
    clock: Callable[[], float] = time.time  # the engine's clock, so a test can run on a fake one
    started: float = field(init=False)
    marks: dict[str, float] = field(default_factory=dict)  # inject, detected, healed, mitigated, recovered
    loads: dict[str, Load] = field(default_factory=dict)  # extra loads started by actions
    log_lines: list[str] = field(default_factory=list)
    fault_replica: str | None = None  # the Serve replica id a fault was injected into, if one
    active_before: set[frozenset[tuple[str, str]]] = field(default_factory=set)  # alerts active at inject

    def __post_init__(self) -> None:
        self.started = self.clock()

    def log(self, message: str) -> None:
        line = f"[{self.clock() - self.started:7.1f}s] {message}"
        self.log_lines.append(line)
        print(line, flush=True)

    def mark(self, name: str) -> float:
        self.marks[name] = self.clock()
        return self.marks[name]
