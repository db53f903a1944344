"""The Serve LLM endpoint against vLLM's own OpenAI server: same model, engine settings and load.

Both are driven by vLLM's serving benchmark (`vllm bench serve`, random prompts, ignore_eos), in
alternating runs while the other server idles. The standalone server gets the engine arguments of
the ops config and the thread binding the Serve engine actually runs with (Ray sets OMP_NUM_THREADS
from the placement-group bundle; vLLM pins those threads to cores).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from loadtests import vllm_bench
from loadtests.bench import cpu
from stack.config import BenchLlm, BenchMode, LLMModel, OpsConfig
from stack.local.ray_head import local_pid
from stack.serving.llm_app import resolve_source

THREAD_ENV = ("OMP_NUM_THREADS", "GOMP_CPU_AFFINITY")


def serve_engine_threads() -> dict[str, str]:
    """OMP_NUM_THREADS and the pinned cores of the Serve engine's worker, where it has them."""
    pid = local_pid("VLLM::Worker") or local_pid("VLLM::EngineCore")
    if pid is None:
        return {}
    items = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    found = dict(item.split("=", 1) for item in items if item.split("=", 1)[0] in THREAD_ENV)
    env = {}
    if "OMP_NUM_THREADS" in found:
        env["OMP_NUM_THREADS"] = found["OMP_NUM_THREADS"]
    if "GOMP_CPU_AFFINITY" in found:
        env["VLLM_CPU_OMP_THREADS_BIND"] = found["GOMP_CPU_AFFINITY"]  # vLLM CPU's own binding setting
    return env


def engine_flags(engine_kwargs: dict[str, Any]) -> list[str]:
    """LLMConfig engine_kwargs as vLLM CLI flags (False keeps vLLM's default)."""
    flags: list[str] = []
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, str(value)]
    return flags


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def standalone(ops: OpsConfig, model: LLMModel, env: dict[str, str], log: Path,
               extra: tuple[str, ...] = (), timeout_s: float = 300) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port; its base URL."""
    host = ops.listen.host
    port = free_port(host)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
           resolve_source(model.model_source), "--served-model-name", model.model_id, "--host", host,
           "--port", str(port), *engine_flags(model.engine_kwargs), *extra]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM's server exited {proc.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM's server not ready in {timeout_s:g}s; see {log}")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench(url: str, model: LLMModel, llm: BenchLlm, prompts: int, result_dir: Path) -> dict[str, Any]:
    """One `vllm bench serve` run; its figures and the CPU each process group spent per output token."""
    before = cpu.snapshot()
    result = vllm_bench.run([
        "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
        "--model", model.model_id, "--tokenizer", resolve_source(model.model_source),
        "--dataset-name", "random", "--random-input-len", str(llm.input_tokens),
        "--random-output-len", str(llm.output_tokens), "--ignore-eos", "--num-prompts", str(prompts),
        "--max-concurrency", str(llm.concurrency), "--num-warmups", str(llm.concurrency), "--seed", "0",
        "--disable-tqdm", "--result-dir", str(result_dir),
    ])
    if result.get("failed") or result.get("completed") != prompts:
        raise RuntimeError(f"vllm bench against {url}: {result.get('completed')} of {prompts} completed, "
                           f"{result.get('failed')} failed")
    keep = ("completed", "duration", "total_output_tokens", "output_throughput", "request_throughput",
            "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "median_itl_ms")
    # vLLM's figures are numpy scalars: plain floats, so comparisons give bools JSON can write.
    return {**{k: round(float(result[k]), 3) for k in keep if k in result},
            "cpu_ms_per_output_token": cpu.per_request_ms(before, cpu.snapshot(),
                                                          result["total_output_tokens"])}


def figures(ops: OpsConfig, profile: str, mode: BenchMode, out: Path, breakdown: bool) -> dict[str, Any]:
    llm = ops.bench.llm
    model = ops.profile(profile).llm.models[0]
    threads = serve_engine_threads()
    env = {**ops.profile(profile).cluster.env, **threads}
    serve_runs, vllm_runs = [], []
    with standalone(ops, model, env, out / "vllm-server.log") as url:
        for _ in range(mode.repeats):
            serve_runs.append(bench(ops.listen.serve_url, model, llm, mode.llm_prompts, out))
            vllm_runs.append(bench(url, model, llm, mode.llm_prompts, out))
    serve_tok = statistics.mean(r["output_throughput"] for r in serve_runs)
    vllm_tok = statistics.mean(r["output_throughput"] for r in vllm_runs)
    ttft = statistics.mean(s["median_ttft_ms"] - v["median_ttft_ms"]
                           for s, v in zip(serve_runs, vllm_runs, strict=True))
    inputs = {"model": model.model_id, "engine_kwargs": model.engine_kwargs,
              "concurrency": llm.concurrency, "input_tokens": llm.input_tokens,
              "output_tokens": llm.output_tokens, "prompts": mode.llm_prompts, "repeats": mode.repeats,
              "endpoint": "/v1/completions, streamed", "standalone_thread_env": threads,
              "load_generator": "vllm bench serve (random dataset, ignore_eos)"}
    result: dict[str, Any] = {
        "llm_throughput_ratio": {"value": round(serve_tok / vllm_tok, 3), "inputs": inputs,
                                 "serve_output_tok_per_s": round(serve_tok, 1),
                                 "vllm_output_tok_per_s": round(vllm_tok, 1),
                                 "serve_runs": serve_runs, "vllm_runs": vllm_runs},
        "ttft_overhead_ms": {"value": round(ttft, 1), "inputs": inputs,
                             "serve_p50_ttft_ms": [r["median_ttft_ms"] for r in serve_runs],
                             "vllm_p50_ttft_ms": [r["median_ttft_ms"] for r in vllm_runs]},
    }
    if breakdown:
        # ray.serve.llm runs vLLM's multiprocess executor on CPU (the engine core and a separate worker);
        # vLLM alone runs the worker in the engine core. The same server with mp splits the gap in two.
        with standalone(ops, model, env, out / "vllm-server-mp.log",
                        extra=("--distributed-executor-backend", "mp")) as url:
            mp = bench(url, model, llm, mode.llm_prompts, out)
        result["llm_throughput_ratio"]["vllm_mp_executor"] = {
            "output_tok_per_s": mp["output_throughput"], "median_ttft_ms": mp["median_ttft_ms"],
            "serve_ratio_to_it": round(serve_tok / mp["output_throughput"], 3)}
    return result
