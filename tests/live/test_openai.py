"""OpenAI compatibility, proven by real clients against the live stack."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

from loadtests import vllm_bench
from stack import ROOT

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def client(serve_url: str) -> OpenAI:
    return OpenAI(base_url=f"{serve_url}/v1", api_key="unused", timeout=60)


def test_models_lists_the_model(client: OpenAI, model_id: str) -> None:
    assert model_id in [m.id for m in client.models.list().data]


def test_chat_completion(client: OpenAI, model_id: str) -> None:
    out = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert out.choices[0].message.content
    assert out.usage.completion_tokens == 8


def test_chat_completion_streams_tokens(client: OpenAI, model_id: str) -> None:
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2


def test_raw_stream_ends_with_done(serve_url: str, model_id: str) -> None:
    body = {"model": model_id, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{serve_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert any(json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1])


def test_completions(client: OpenAI, model_id: str) -> None:
    out = client.completions.create(model=model_id, prompt="Ray Serve is", max_tokens=6)
    assert out.choices[0].text
    assert out.usage.completion_tokens == 6


@pytest.mark.parametrize("header", ["serve_multiplexed_model_id", "serve-multiplexed-model-id"])
def test_a_multiplexing_header_does_not_reach_the_model(serve_url: str, model_id: str, header: str) -> None:
    """/predict's tenant header sent to an LLM route is ignored, as with two hops: the model's server
    would take it for a LoRA adapter to load (the one_hop_llm lever's bench fuzz found 500s)."""
    for stream in (False, True):
        body = {"model": model_id, "prompt": "hi", "max_tokens": 2, "stream": stream}
        r = httpx.post(f"{serve_url}/v1/completions", json=body, headers={header: "!"}, timeout=60)
        assert r.status_code == 200, r.text


def test_vllm_bench_serve_every_request_succeeds(serve_url: str, model_id: str, tmp_path) -> None:
    result = vllm_bench.run([
        "--backend", "openai", "--base-url", serve_url, "--endpoint", "/v1/completions",
        "--model", model_id, "--tokenizer", str(ROOT / ".models" / "tiny-llama"),
        "--dataset-name", "random", "--random-input-len", "32", "--random-output-len", "16",
        "--num-prompts", "24", "--max-concurrency", "4", "--seed", "0",
        "--disable-tqdm", "--result-dir", str(tmp_path),
    ])
    assert result["completed"] == 24
    assert result["failed"] == 0
    assert result["total_output_tokens"] == 24 * 16
