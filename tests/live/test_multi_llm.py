"""Two LLMs served at once from one app, as the guide's multi-LLM example does.

A second application with two models is deployed beside the default one, then removed again
by redeploying the default config; the default app keeps serving throughout.
"""

from __future__ import annotations

import copy

import pytest
from openai import OpenAI

from stack import serve_config
from stack.config import OpsConfig
from stack.local import serve_deploy
from stack.profile import select

pytestmark = pytest.mark.live
PAIR = ("tiny-a", "tiny-b")


def pair_app(base: dict) -> dict:
    app = copy.deepcopy(next(a for a in base["applications"] if a["name"] == serve_config.LLM_APP))
    template = app["args"]["llm_configs"][0]
    app["args"]["llm_configs"] = []
    for model_id in PAIR:
        cfg = copy.deepcopy(template)
        cfg["model_loading_config"]["model_id"] = model_id
        app["args"]["llm_configs"].append(cfg)
    return {**app, "name": "llm-pair", "route_prefix": "/pair"}


def test_two_models_in_one_app(live_stack: OpsConfig, model_id: str) -> None:
    dashboard = live_stack.listen.dashboard_url
    base = serve_config.effective(select())
    with_pair = {**base, "applications": [*base["applications"], pair_app(base)]}
    serve_deploy.deploy(dashboard, with_pair)
    try:
        serve_deploy.wait_running(dashboard, ["llm", "llm-pair"], timeout_s=600)
        pair = OpenAI(base_url=f"{live_stack.listen.serve_url}/pair/v1", api_key="unused", timeout=60)
        assert sorted(m.id for m in pair.models.list().data) == list(PAIR)
        for pid in PAIR:
            out = pair.chat.completions.create(model=pid, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4)
            assert out.model == pid and out.choices[0].message.content
        default = OpenAI(base_url=f"{live_stack.listen.serve_url}/v1", api_key="unused", timeout=60)
        assert [m.id for m in default.models.list().data] == [model_id]
    finally:
        serve_deploy.deploy(dashboard, base)
        serve_deploy.wait_absent(dashboard, ["llm-pair"], timeout_s=120)
        serve_deploy.wait_running(dashboard, ["llm"], timeout_s=600)
