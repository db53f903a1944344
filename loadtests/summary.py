"""Figures of one run from its per-request samples: per entry, for the LLM, and for locust itself."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from loadtests import routes
from stack.stats import percentile


@dataclass(frozen=True)
class Sample:
    t: float  # wall time the request ended
    name: str
    ms: float
    ok: bool
    tokens: int
    goodput: str = ""  # LLM goodput samples: ok (good) or the reason it was not

    @classmethod
    def parse(cls, row: list[Any]) -> Sample:
        return cls(float(row[0]), str(row[1]), float(row[2]), bool(row[3]), int(row[4]),
                   str(row[5]) if len(row) > 5 else "")


@dataclass(frozen=True)
class Run:
    """What locustfile.py wrote: settings, samples, locust's CPU, and the run's wall-clock window.
    Distributed (WORKERS=N), cpu holds the busiest worker's CPU and all users a second, and
    worker_cpu each worker's own rows (loadtests/distributed.py merges them)."""

    settings: dict[str, Any]
    samples: list[Sample]
    cpu: list[tuple[float, float, int]]  # (time, percent of one core, users)
    started: float
    ended: float
    model: str = ""  # the LLM model the run sent to
    worker_cpu: dict[int, list[tuple[float, float, int]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, record: dict[str, Any]) -> Run:
        workers = {int(w["index"]): [tuple(r) for r in w["locust_cpu"]] for w in record.get("workers", [])}
        return cls(record["settings"], [Sample.parse(r) for r in record["samples"]],
                   [tuple(r) for r in record["locust_cpu"]], record["started"], record["ended"],
                   record.get("model", ""), workers)

    @property
    def duration_s(self) -> float:
        return max(self.ended - self.started, 1e-9)

    def by_name(self) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = defaultdict(list)
        for s in self.samples:
            out[s.name].append(s)
        return out


def quantiles(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}_ms": (round(percentile(values, q), 2) if values else None) for q in (50, 95, 99)}


def entry_figures(samples: list[Sample], duration_s: float) -> dict[str, Any]:
    failed = sum(not s.ok for s in samples)
    return {"requests": len(samples), "failures": failed, "rps": round(len(samples) / duration_s, 2),
            **quantiles([s.ms for s in samples if s.ok])}


def llm_figures(run: Run) -> dict[str, Any]:
    named = run.by_name()
    llm_entries = {routes.ENTRIES["chat"].name, routes.ENTRIES["completions"].name}
    tokens = sum(s.tokens for name in llm_entries for s in named.get(name, []) if s.ok)
    figures: dict[str, Any] = {}
    for key, name in (("ttft", routes.TTFT), ("itl", routes.ITL), ("tpot", routes.TPOT)):
        values = [s.ms for s in named.get(name, [])]
        figures[key] = {"count": len(values), **quantiles(values)}
    figures["output_tokens"] = tokens
    figures["output_tokens_per_s"] = round(tokens / run.duration_s, 1)
    figures["goodput"] = goodput_figures(run)
    return figures


def goodput_figures(run: Run) -> dict[str, Any]:
    """Per model: LLM requests judged, how many were good, and the reasons of the rest."""
    judged = [s.goodput for s in run.by_name().get(routes.GOODPUT, [])]
    if not judged:
        return {}
    bad: dict[str, int] = defaultdict(int)
    for reason in judged:
        if reason != "ok":
            bad[reason] += 1
    good = judged.count("ok")
    return {run.model: {"requests": len(judged), "good": good, "share": round(good / len(judged), 4),
                        "per_s": round(good / run.duration_s, 2), "bad": dict(sorted(bad.items()))}}


def cpu_figures(rows: list[tuple[float, float, int]], warn_percent: float) -> dict[str, Any]:
    """A locust process is one core: near a full one, it and not the stack limits the load."""
    cpu = [c[1] for c in rows]
    windows = [sum(cpu[i:i + 5]) / len(cpu[i:i + 5]) for i in range(0, len(cpu), 5)]
    peak = max(windows, default=0.0)
    return {"cpu_mean_percent": round(sum(cpu) / len(cpu), 1) if cpu else None,
            "cpu_peak_5s_percent": round(peak, 1), "warn_percent": warn_percent,
            "saturated": peak >= warn_percent}


def locust_figures(run: Run, warn_percent: float) -> dict[str, Any]:
    """The load generator's CPU; distributed, also per worker, saturated when any worker was."""
    figures = cpu_figures(run.cpu, warn_percent)
    if run.worker_cpu:
        workers = {str(i): cpu_figures(rows, warn_percent) for i, rows in sorted(run.worker_cpu.items())}
        for w in workers.values():
            del w["warn_percent"]
        figures["saturated"] = figures["saturated"] or any(w["saturated"] for w in workers.values())
        figures["workers"] = workers
    return figures


def arrival_figures(run: Run) -> dict[str, Any] | None:
    """SHAPE=rate: the achieved arrival rate; short of the target means too few users to keep up."""
    target = run.settings.get("rate_per_s")
    if target is None:
        return None
    sent = sum(1 for s in run.samples if s.name in routes.BY_NAME)
    achieved = sent / run.duration_s
    return {"target_per_s": target, "achieved_per_s": round(achieved, 2),
            "kept_up": achieved >= 0.95 * target}


def summarize(run: Run, warn_percent: float) -> dict[str, Any]:
    named = run.by_name()
    exercised = [e for e in routes.ENTRIES.values() if run.settings["weights"].get(e.task, 0) > 0]
    return {
        "duration_s": round(run.duration_s, 1),
        "routes": {e.name: entry_figures(named.get(e.name, []), run.duration_s) for e in exercised},
        "llm": llm_figures(run),
        "load_generator": locust_figures(run, warn_percent),
        "arrival_rate": arrival_figures(run),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(summary: dict[str, Any]) -> str:
    """The console summary: per-route figures, then the LLM's, then the load generator's."""
    lines = [f"{'route':<30} {'reqs':>6} {'fails':>6} {'rps':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]
    for name, f in summary["routes"].items():
        times = " ".join(f"{_ms(f[k]):>8}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        lines.append(f"{name:<30} {f['requests']:>6} {f['failures']:>6} {f['rps']:>7.2f} {times}")
    llm = summary["llm"]
    if llm["ttft"]["count"]:
        parts = [f"{k.upper()} p50 {_ms(llm[k]['p50_ms'])} p99 {_ms(llm[k]['p99_ms'])} ms"
                 for k in ("ttft", "itl", "tpot")]
        lines.append("LLM  " + " | ".join(parts) + f" | output {llm['output_tokens_per_s']} tokens/s")
    for model, g in llm.get("goodput", {}).items():
        bad = ", ".join(f"{reason} {n}" for reason, n in g["bad"].items()) or "none"
        lines.append(f"LLM goodput {model}: {g['share']:.2%} good ({g['good']} of {g['requests']}, "
                     f"{g['per_s']}/s); not good: {bad}")
    gen = summary["load_generator"]
    busiest = f", the busiest of {len(gen['workers'])} workers" if "workers" in gen else ""
    lines.append(f"locust CPU mean {gen['cpu_mean_percent']}% peak(5s) {gen['cpu_peak_5s_percent']}% "
                 f"of one core{busiest} (warns at {gen['warn_percent']:g}%)")
    if "workers" in gen:
        lines.append("locust workers: " + "; ".join(
            f"{i} mean {w['cpu_mean_percent']}% peak(5s) {w['cpu_peak_5s_percent']}%"
            + (" SATURATED" if w["saturated"] else "") for i, w in gen["workers"].items()))
    if summary["arrival_rate"]:
        a = summary["arrival_rate"]
        lines.append(f"arrival rate {a['achieved_per_s']}/s of {a['target_per_s']}/s targeted")
    return "\n".join(lines)
