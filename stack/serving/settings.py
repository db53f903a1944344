"""What a replica is told: its application's args in the Serve config, validated when the app is built.

stack/serve_config.py renders them from the ops config; nothing here reads that file, so the Serve
config alone (`serve deploy stack/serve/gpu.yaml` on any cluster) carries every setting a replica needs.
The ops config's `api` and `tenants` sections are these same models (stack/config.py imports them),
so what the config accepts and what a replica is told cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The LLM lever first_chunk_at_once, as a model's experimental_configs key: stack/levers.py sets it in the
# Serve config and stack/serving/llm_server.py reads it (here, so neither imports the other's weight).
FIRST_CHUNK_AT_ONCE = "serveops_first_chunk_at_once"
# The LLM lever one_hop_llm, the same way: stack/serving/llm_app.py builds an app with one model as one
# deployment, the validating ingress and the model's server in the same replica.
ONE_HOP = "serveops_one_hop"


def one_hop(experimental_configs: list[Mapping[str, Any]]) -> bool:
    """Whether the LLM app with these models' experimental_configs is built as one deployment.

    Only with one model: with several, the ingress's hop is what routes each request to its model.
    """
    return len(experimental_configs) == 1 and bool(experimental_configs[0].get(ONE_HOP))


class _Strict(BaseModel):
    # An arg the code does not know is a typo or a version skew: fail the deploy, not a request.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiLimits(_Strict):
    """Request limits every route enforces; past them a request gets a 4xx naming the field."""

    max_body_bytes: int = Field(gt=0)
    max_text_chars: int = Field(gt=0)
    max_texts: int = Field(gt=0)
    max_features: int = Field(gt=0)
    max_tenant_id_chars: int = Field(gt=0)
    max_messages: int = Field(gt=0)
    max_prompt_chars: int = Field(gt=0)


class Tenants(_Strict):
    """/predict tenants by tier; metrics carry the tier, never the tenant id."""

    tiers: dict[str, str]
    default_tier: str

    def tier(self, tenant: str) -> str:
        return self.tiers.get(tenant, self.default_tier)

    @property
    def all_tiers(self) -> set[str]:
        return {*self.tiers.values(), self.default_tier}


class FaultSettings(_Strict):
    """Fault injection (stack.serving.faults): present only where the profile enables it."""

    # The control file chaos writes, relative to the project root (stack.serving.models.PROJECT_ROOT).
    control_file: str = Field(min_length=1)


class AppArgs(_Strict):
    """Args every app takes."""

    api: ApiLimits
    # None (absent): no fault hook is installed, and requests pay nothing for it.
    faults: FaultSettings | None = None


class Goodput(_Strict):
    """A request is good when it succeeded, its first token came within ttft_ms and the rest streamed at
    a mean of at most tpot_ms a token; `target` is the share that must be good (the goodput SLO).

    A non-streamed answer reaches the user all at once: it is good when it took no longer than a streamed
    one meeting both objectives would have, ttft_ms + tpot_ms x (completion tokens - 1).
    """

    ttft_ms: float = Field(gt=0)
    tpot_ms: float = Field(gt=0)
    target: float = Field(gt=0, lt=1)

    @property
    def budget(self) -> float:
        return 1 - self.target

    def judge(self, ttft_ms: float | None, e2e_ms: float, tokens: int) -> str:
        """`ok` (a good request), or the first objective missed: `ttft`, `tpot`, or `e2e` for an answer
        not streamed (ttft_ms None)."""
        if ttft_ms is None:
            return "ok" if e2e_ms <= self.ttft_ms + self.tpot_ms * max(tokens - 1, 0) else "e2e"
        if ttft_ms > self.ttft_ms:
            return "ttft"
        tpot_ms = (e2e_ms - ttft_ms) / (tokens - 1) if tokens > 1 else 0.0
        return "ok" if tpot_ms <= self.tpot_ms else "tpot"


class LLMArgs(AppArgs):
    # model_id -> its goodput objectives; the ingress judges each request by them.
    goodput: dict[str, Goodput]


class PredictArgs(AppArgs):
    tenants: Tenants
    max_num_models_per_replica: int = Field(gt=0)
    # Where the tenants' models are, relative to the project root; a new release may point elsewhere.
    model_store: str | None = None


Args = TypeVar("Args", bound=BaseModel)


def parse_args(model: type[Args], args: Mapping[str, Any] | None, app: str) -> Args:
    """The app's args as `model`; a missing or bad arg fails the build with a message naming it."""
    try:
        return model.model_validate(dict(args or {}))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"the {app} app's args in the Serve config are invalid: {problems}") from None
