"""The live export against the pinned metric contract: an upgrade of Ray or vLLM that renames, drops or
relabels a family we use fails here, naming it (alerts/metric_contract.py)."""

from __future__ import annotations

import json

import pytest

from alerts import metric_contract
from stack.config import OpsConfig

pytestmark = pytest.mark.live


def test_the_live_export_matches_the_pinned_contract_in_every_family_we_use(live_stack: OpsConfig) -> None:
    pinned = json.loads(metric_contract.FIXTURE.read_text())
    live = metric_contract.capture(live_stack)
    used = metric_contract.used_samples(live_stack) - set(metric_contract.EVENT_ONLY)
    # The GPU families come from the pinned NVML scrape on both sides; the rest is this stack's.
    assert any(n.startswith("ray_vllm_") for n in used & set(live["samples"]))
    problems = metric_contract.diff(live, pinned, used)
    assert not problems, "\n".join(problems)
    assert not metric_contract.check(live_stack, live), "the live export lacks what a rule or panel reads"
