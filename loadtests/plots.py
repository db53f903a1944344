"""PNG plots of a run: latency, throughput, LLM timings, replicas and alerts over time."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from loadtests import routes
from loadtests.summary import Run, Sample
from stack.prom import History, Series
from stack.stats import percentile

Windows = dict[str, dict[float, list[Sample]]]


def windows(run: Run, width_s: float) -> Windows:
    """Samples per entry name per window, keyed by the window's start in seconds into the run."""
    out: Windows = defaultdict(lambda: defaultdict(list))
    for s in run.samples:
        out[s.name][(s.t - run.started) // width_s * width_s].append(s)
    return out


def _axes(rows: int, title: str):
    fig, axes = plt.subplots(rows, 1, figsize=(11, 3.2 * rows), sharex=True, squeeze=False)
    fig.suptitle(title)
    return fig, [a[0] for a in axes]


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", transform=ax.transAxes)


def _save(fig, path: Path) -> Path:
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    fig.axes[-1].set_xlabel("seconds into the run")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def latency(run: Run, win: Windows, path: Path) -> Path:
    fig, (p50, p99) = _axes(2, "Latency per route")
    for name in routes.BY_NAME:
        if name not in win:
            continue
        xs = sorted(win[name])
        for ax, q in ((p50, 50), (p99, 99)):
            ax.plot(xs, [percentile([s.ms for s in win[name][x] if s.ok], q) for x in xs], label=name)
    for ax, q in ((p50, "p50"), (p99, "p99")):
        ax.set_ylabel(f"{q} ms")
        ax.set_yscale("log")
    return _save(fig, path)


def throughput(run: Run, win: Windows, width_s: float, path: Path) -> Path:
    fig, (rps, errors, load) = _axes(3, "Throughput, errors and load")
    for name in routes.BY_NAME:
        if name in win:
            xs = sorted(win[name])
            rps.plot(xs, [len(win[name][x]) / width_s for x in xs], label=name)
            errors.plot(xs, [sum(not s.ok for s in win[name][x]) / width_s for x in xs], label=name)
    rps.set_ylabel("requests/s")
    errors.set_ylabel("failures/s")
    ts = [c[0] - run.started for c in run.cpu]
    load.plot(ts, [c[2] for c in run.cpu], color="black", label="users")
    load.set_ylabel("users")
    cpu = load.twinx()
    cpu.plot(ts, [c[1] for c in run.cpu], color="tab:red", alpha=0.6)
    cpu.set_ylabel("locust CPU % (red)")
    return _save(fig, path)


def llm(run: Run, win: Windows, width_s: float, path: Path) -> Path:
    fig, (ttft, tpot, tokens) = _axes(3, "LLM: time to first token, time per output token, output tokens")
    for ax, name in ((ttft, routes.TTFT), (tpot, routes.TPOT)):
        xs = sorted(win.get(name, {}))
        for q in (50, 99):
            ax.plot(xs, [percentile([s.ms for s in win[name][x]], q) for x in xs], label=f"p{q}")
        ax.set_ylabel(f"{name.split()[-1]} ms")
    llm_names = (routes.ENTRIES["chat"].name, routes.ENTRIES["completions"].name)
    per_window: dict[float, int] = defaultdict(int)
    for name in llm_names:
        for x, samples in win.get(name, {}).items():
            per_window[x] += sum(s.tokens for s in samples if s.ok)
    xs = sorted(per_window)
    tokens.plot(xs, [per_window[x] / width_s for x in xs], label="chat + completions")
    tokens.set_ylabel("output tokens/s")
    return _save(fig, path)


def _relative(series: Series, run: Run) -> Series:
    return {k: [(t - run.started, v) for t, v in pts] for k, pts in series.items()}


def replicas(run: Run, history: History, path: Path) -> Path:
    fig, (ax,) = _axes(1, "Healthy replicas per deployment (Prometheus)")
    for name, pts in sorted(_relative(history.replicas, run).items()):
        ax.step([t for t, _ in pts], [v for _, v in pts], where="post", label=name)
    if not history.replicas:
        _note(ax, history.error or "no replica series in Prometheus")
    ax.set_ylabel("replicas")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def alerts(run: Run, history: History, path: Path) -> Path:
    fig, (ax,) = _axes(1, "Firing alerts (Prometheus)")
    fired = history.alerts_fired()
    step = 1.0
    for row, name in enumerate(fired):
        pts = _relative(history.alerts, run)[name]
        if pts:
            step = pts[1][0] - pts[0][0] if len(pts) > 1 else step
        ax.broken_barh([(t, step) for t, v in pts if v > 0], (row - 0.4, 0.8), color="tab:red")
    ax.set_yticks(range(len(fired)), fired)
    ax.set_xlim(0, run.duration_s)
    if not fired:
        _note(ax, history.error or "no alert fired during the run")
    return _save(fig, path)


def draw_all(run: Run, history: History, width_s: float, out: Path) -> list[Path]:
    win = windows(run, width_s)
    return [latency(run, win, out / "latency.png"), throughput(run, win, width_s, out / "throughput.png"),
            llm(run, win, width_s, out / "llm.png"), replicas(run, history, out / "replicas.png"),
            alerts(run, history, out / "alerts.png")]
