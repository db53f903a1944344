"""The Serve LLM endpoint against vLLM's own OpenAI server: same model, engine settings and load.

Both are driven by vLLM's serving benchmark (`vllm bench serve`, random prompts, ignore_eos), in
alternating runs while the other server idles (who goes first swaps each repeat). The standalone server
gets the engine arguments of the ops config and the Serve engine's thread settings as its processes have
them (Ray sets OMP_NUM_THREADS from the placement-group bundle; vLLM pins the worker's threads to cores),
and its worker must land on the same cores, and share CPU in the same scheduling group, as the Serve
engine's; if either cannot be read or they differ, the section fails rather than compare with a server
bound otherwise. Throughput is measured at bench.llm.concurrency; TTFT overhead at concurrency 1, so no
queueing hides in it, and only against a baseline whose answers streamed token by token.
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
from loadtests.bench import cpu, spread
from stack.config import BenchLlm, BenchMode, LLMModel, OpsConfig
from stack.local.ray_head import cmdlines, local_pid
from stack.serving.llm_app import resolve_source

# The Serve engine's thread settings, handed to the standalone server as they are, so vLLM binds both
# engines' workers alike (VLLM_CPU_OMP_THREADS_BIND unset is vLLM's auto binding); `standalone` then
# checks that the two workers landed on the same cores. The Serve worker's cores translated into an
# explicit VLLM_CPU_OMP_THREADS_BIND are another configuration than the Serve engine's, whatever they
# cost (a server so started, in a session of its own, answered in one burst: see sched_group).
THREAD_ENV = ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")
ENGINE_PROCESSES = ("VLLM::Worker", "VLLM::EngineCore")
# vllm bench's TPOT is (latency - TTFT) / (output tokens - 1): decode time per token when the answer
# streams (milliseconds here). An answer sent in one burst has latency = TTFT, so TPOT near 0, and its
# "TTFT" is the whole answer. 0.1 ms a token (10,000 tokens/s in one stream) is beyond any real decode.
# Median ITL is no such test: the events of a streamed answer often share one read (a smoke run: ITL
# 0.004 ms on both servers, TPOT 5 and 13.5 ms).
STREAMED_TPOT_FLOOR_MS = 0.1


def prompt_seed(kind: str, repeat: int = 0) -> int:
    """The random prompts' seed of a run (settle, at, c1 or mp) in a repeat. Each run draws new prompts,
    the same for both servers, so no run is answered from a prefix cache an earlier run filled with the
    same prompts (every run had seed 0 before)."""
    return {"settle": 1, "at": 2, "c1": 3, "mp": 4}[kind] + 10 * repeat


def thread_env(environ: dict[str, str]) -> dict[str, str]:
    """The thread settings of an engine process's environment, as they are."""
    return {k: environ[k] for k in THREAD_ENV if k in environ}


def _environ(pid: int, what: str) -> dict[str, str]:
    try:
        items = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError as err:
        raise RuntimeError(f"could not read the {what}'s thread environment: /proc/{pid}/environ: "
                           f"{err}") from err
    return dict(item.split("=", 1) for item in items if "=" in item)


def _serve_engine() -> tuple[str, int]:
    found = [(name, pid) for name in ENGINE_PROCESSES if (pid := local_pid(name)) is not None]
    if not found:
        raise RuntimeError("could not read the Serve vLLM engine's OMP_NUM_THREADS: no "
                           f"{' or '.join(ENGINE_PROCESSES)} process on this machine (is the LLM app up?)")
    return found[0]


def serve_engine_threads() -> dict[str, str]:
    """thread_env of the Serve engine's worker; RuntimeError naming what could not be read, since a
    standalone server without it would run on every core against the engine's few."""
    name, pid = _serve_engine()
    env = thread_env(_environ(pid, f"Serve vLLM engine ({name})"))
    if "OMP_NUM_THREADS" not in env:
        raise RuntimeError(f"could not read the Serve vLLM engine's OMP_NUM_THREADS: /proc/{pid}/environ of "
                           f"{name} has none; the standalone server would run unpinned")
    return env


def sched_group(pid: int) -> str | None:
    """The process's autogroup ("/autogroup-N nice K") where the kernel schedules by session, else None.
    With autogroups, CPU is shared fairly between sessions first and niceness counts only within one:
    on the 2-core box (2026-12-03) vLLM's own server in a session of its own kept the load generator off
    the CPU for ~200 ms at a time, so every answer reached it in one burst (p50 TTFT 196-245 ms, TPOT
    0.005 ms) while vLLM's own metrics read TTFT 15.8 ms; in the load generator's session it streamed."""
    if not autogroups():
        return None
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return None


def autogroups() -> bool:
    """Whether the kernel schedules by session (CONFIG_SCHED_AUTOGROUP, switched on)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def worker_binding(pid: int) -> dict[str, Any]:
    """Where a vLLM worker's threads run: its CPU affinity, the OpenMP binding vLLM gave it and the
    scheduling group it shares CPU in."""
    return {"cores": sorted(os.sched_getaffinity(pid)),
            "GOMP_CPU_AFFINITY": _environ(pid, "vLLM worker").get("GOMP_CPU_AFFINITY"),
            "sched_group": sched_group(pid)}


def serve_worker_binding() -> dict[str, Any]:
    pid = local_pid(ENGINE_PROCESSES[0])
    if pid is None:
        raise RuntimeError(f"no {ENGINE_PROCESSES[0]} process of the Serve engine on this machine")
    return worker_binding(pid)


def group_worker(pgid: int) -> int | None:
    """The vLLM worker process of a process group (the standalone server starts one of its own)."""
    for pid, cmd in cmdlines():
        if ENGINE_PROCESSES[0] in cmd:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pgid:
                    return pid
    return None


def serve_engine_nice() -> int:
    """The Serve engine's niceness: Ray starts workers at 15 (RAY_worker_niceness) and the engine core
    and worker inherit it, so the standalone server runs at it too, below the load generator as the
    Serve engine is (a smoke run on the 2-core box, 2026-12-02: p50 TTFT at concurrency 8 538 ms at 0,
    77 ms at 15)."""
    return os.getpriority(os.PRIO_PROCESS, _serve_engine()[1])


def require_streamed(run: dict[str, Any], what: str) -> None:
    """RuntimeError unless the run's answers streamed token by token (see STREAMED_TPOT_FLOOR_MS)."""
    tpot = run.get("median_tpot_ms")
    if tpot is None or tpot < STREAMED_TPOT_FLOOR_MS:
        raise RuntimeError(f"{what} did not stream: median TPOT {tpot} ms, under the floor of "
                           f"{STREAMED_TPOT_FLOOR_MS} ms, so its answers arrived in one burst and its TTFT "
                           "is the whole answer; a TTFT comparison against it would be invalid")


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
               extra: tuple[str, ...] = (), timeout_s: float = 300, nice: int = 0,
               binding: dict[str, Any] | None = None) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port, at that niceness, with
    env's thread settings and none of this process's own; its base URL. With binding (worker_binding of
    the Serve engine's worker), RuntimeError unless its worker runs bound the same way."""
    host = ops.listen.host
    port = free_port(host)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
           resolve_source(model.model_source), "--served-model-name", model.model_id, "--host", host,
           "--port", str(port), *engine_flags(model.engine_kwargs), *extra]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        inherited = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
        proc = subprocess.Popen(cmd, env={**inherited, **env}, stdout=out, stderr=subprocess.STDOUT,
                                # Its own process group, to stop it whole, in this session: a session
                                # of its own is a scheduling group of its own (sched_group).
                                process_group=0,
                                preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, nice))
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
        if binding is not None:
            worker = group_worker(proc.pid)
            got = None if worker is None else worker_binding(worker)
            if got != binding:
                hint = ("; the Serve stack was started from another session: `make down`, then "
                        "`make bench` starts it in its own" if got and got["sched_group"] !=
                        binding["sched_group"] else "")
                raise RuntimeError(f"vLLM's own server's worker runs bound {got}, the Serve engine's "
                                   f"{binding}: the comparison would not be like for like{hint}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def bench(url: str, model: LLMModel, llm: BenchLlm, prompts: int, concurrency: int,
          result_dir: Path, seed: int = 0) -> dict[str, Any]:
    """One `vllm bench serve` run on the random prompts of seed; its figures and the CPU each process
    group spent per output token. A server should see a seed's prompts once (prompt_seed)."""
    before = cpu.snapshot()
    result = vllm_bench.run([
        "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
        "--model", model.model_id, "--tokenizer", resolve_source(model.model_source),
        "--dataset-name", "random", "--random-input-len", str(llm.input_tokens),
        "--random-output-len", str(llm.output_tokens), "--ignore-eos", "--num-prompts", str(prompts),
        "--max-concurrency", str(concurrency), "--num-warmups", str(concurrency), "--seed", str(seed),
        "--disable-tqdm", "--result-dir", str(result_dir),
    ])
    if result.get("failed") or result.get("completed") != prompts:
        raise RuntimeError(f"vllm bench against {url}: {result.get('completed')} of {prompts} completed, "
                           f"{result.get('failed')} failed")
    keep = ("completed", "duration", "total_output_tokens", "output_throughput", "request_throughput",
            "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "median_itl_ms")
    # vLLM's figures are numpy scalars: plain floats, so comparisons give bools JSON can write.
    return {**{k: round(float(result[k]), 3) for k in keep if k in result}, "concurrency": concurrency,
            "cpu_ms_per_output_token": cpu.per_request_ms(before, cpu.snapshot(),
                                                          result["total_output_tokens"])}


def ttft_figure(serve_c1: list[dict[str, Any]], vllm_c1: list[dict[str, Any]],
                serve_at: list[dict[str, Any]], vllm_at: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 TTFT, Serve minus vLLM, per repeat: at concurrency 1 the figure; at the throughput
    concurrency (where queueing adds to both) a field of its own."""
    def diffs(serve: list[dict[str, Any]], vllm: list[dict[str, Any]]) -> list[float]:
        return [s["median_ttft_ms"] - v["median_ttft_ms"] for s, v in zip(serve, vllm, strict=True)]

    return {**spread.figure(diffs(serve_c1, vllm_c1), digits=1),
            "serve_p50_ttft_ms": [r["median_ttft_ms"] for r in serve_c1],
            "vllm_p50_ttft_ms": [r["median_ttft_ms"] for r in vllm_c1],
            "at_throughput_concurrency": {**spread.figure(diffs(serve_at, vllm_at), digits=1),
                                          "serve_p50_ttft_ms": [r["median_ttft_ms"] for r in serve_at],
                                          "vllm_p50_ttft_ms": [r["median_ttft_ms"] for r in vllm_at]}}


def ttft_or_why_not(serve_c1: list[dict[str, Any]], vllm_c1: list[dict[str, Any]],
                    serve_at: list[dict[str, Any]], vllm_at: list[dict[str, Any]]) -> dict[str, Any]:
    """The TTFT figure, or none and why: a baseline that did not stream token by token is no baseline
    (its TTFT is its whole answer). Output tok/s is compared either way."""
    try:
        for run in vllm_c1:
            require_streamed(run, "vLLM's own server (baseline) at concurrency 1")
    except RuntimeError as err:
        return {"value": None, "error": str(err),
                "vllm_median_tpot_ms": [r.get("median_tpot_ms") for r in vllm_c1]}
    return ttft_figure(serve_c1, vllm_c1, serve_at, vllm_at)


def figures(ops: OpsConfig, profile: str, mode: BenchMode, out: Path, breakdown: bool) -> dict[str, Any]:
    llm = ops.bench.llm
    model = ops.profile(profile).llm.models[0]
    threads, nice, binding = serve_engine_threads(), serve_engine_nice(), serve_worker_binding()
    env = {**ops.profile(profile).cluster.env, **threads}
    # Per side: runs at the throughput concurrency, and TTFT runs at concurrency 1.
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {side: {"at": [], "c1": []}
                                                        for side in ("serve", "vllm")}
    with standalone(ops, model, env, out / "vllm-server.log", nice=nice, binding=binding) as url:
        urls = {"serve": ops.listen.serve_url, "vllm": url}
        # One discarded run per side first: a fresh vLLM server's first batches run well under its
        # steady rate (a smoke run of 16 prompts read 2x Serve's), and Serve's engine is long warm.
        for side in ("serve", "vllm"):
            bench(urls[side], model, llm, mode.llm_prompts, llm.concurrency, out, prompt_seed("settle"))
        for repeat in range(mode.repeats):
            # Who goes first swaps each repeat, so drift over the section does not favour one side.
            sides = ("serve", "vllm") if repeat % 2 == 0 else ("vllm", "serve")
            for key, prompts, concurrency in (("at", mode.llm_prompts, llm.concurrency),
                                              ("c1", mode.llm_ttft_prompts, 1)):
                for side in sides:
                    runs[side][key].append(bench(urls[side], model, llm, prompts, concurrency, out,
                                                 prompt_seed(key, repeat)))
    serve_runs, vllm_runs = runs["serve"]["at"], runs["vllm"]["at"]
    serve_tok = statistics.mean(r["output_throughput"] for r in serve_runs)
    vllm_tok = statistics.mean(r["output_throughput"] for r in vllm_runs)
    ratios = [s["output_throughput"] / v["output_throughput"]
              for s, v in zip(serve_runs, vllm_runs, strict=True)]
    inputs = {"model": model.model_id, "engine_kwargs": model.engine_kwargs,
              "concurrency": llm.concurrency, "input_tokens": llm.input_tokens,
              "output_tokens": llm.output_tokens, "prompts": mode.llm_prompts, "repeats": mode.repeats,
              "endpoint": "/v1/completions, streamed", "standalone_thread_env": threads,
              "standalone_nice": nice, "worker_binding": binding,
              "order": "one discarded settle run per side; then throughput runs, then TTFT runs; serve "
                       "first in even repeats, vLLM first in odd",
              "prompts_drawn": "new random prompts (seed) per run, the same for both servers",
              "load_generator": "vllm bench serve (random dataset, ignore_eos)"}
    result: dict[str, Any] = {
        "llm_throughput_ratio": {**spread.figure(ratios), "inputs": inputs,
                                 "serve_output_tok_per_s": round(serve_tok, 1),
                                 "vllm_output_tok_per_s": round(vllm_tok, 1),
                                 "serve_runs": serve_runs, "vllm_runs": vllm_runs},
        "ttft_overhead_ms": {
            **ttft_or_why_not(runs["serve"]["c1"], runs["vllm"]["c1"], serve_runs, vllm_runs),
            "inputs": {**inputs, "concurrency": 1, "prompts": mode.llm_ttft_prompts,
                       "throughput_concurrency": llm.concurrency, "throughput_prompts": mode.llm_prompts,
                       "baseline_streamed": f"median TPOT >= {STREAMED_TPOT_FLOOR_MS} ms in every vLLM run "
                                            "at concurrency 1, else no TTFT figure"},
            "serve_runs": runs["serve"]["c1"], "vllm_runs": runs["vllm"]["c1"]},
    }
    if breakdown:
        # ray.serve.llm runs vLLM's multiprocess executor on CPU (the engine core and a separate worker);
        # vLLM alone runs the worker in the engine core. The same server with mp splits the gap in two.
        with standalone(ops, model, env, out / "vllm-server-mp.log",
                        extra=("--distributed-executor-backend", "mp"), nice=nice,
                        binding=binding) as url:
            mp = bench(url, model, llm, mode.llm_prompts, llm.concurrency, out, prompt_seed("mp"))
        result["llm_throughput_ratio"]["vllm_mp_executor"] = {
            "output_tok_per_s": mp["output_throughput"], "median_ttft_ms": mp["median_ttft_ms"],
            "serve_ratio_to_it": round(serve_tok / mp["output_throughput"], 3)}
    return result
