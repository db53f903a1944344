"""PNGs of one family's sweep against the offered rate: latency.png and goodput.png, the knee marked."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from loadtests.sweep.figures import Quantiles
from loadtests.sweep.sweep import FamilyResult


def _value(q: Quantiles | None, key: str) -> float:
    v = None if q is None else q.get(key)
    return math.nan if v is None else v  # a gap in the line, not a made-up point


def _knee(ax, result: FamilyResult) -> None:
    k = result.knee_step
    if k is None:
        ax.text(0.5, 0.9, "no knee: no rate met the target", ha="center", transform=ax.transAxes)
        return
    label = f"knee {k.rate_per_s:g}/s" + (" (last rate: a floor)" if result.knee.last_rate_reached else "")
    ax.axvline(k.rate_per_s, color="tab:green", linestyle="--", label=label)


def _save(fig, result: FamilyResult, path: Path) -> Path:
    for ax in fig.axes:
        ax.set_xscale("log")  # rates grow geometrically
        ax.set_xticks([s.rate_per_s for s in result.steps])
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, which="both")
        _knee(ax, result)
        ax.legend(fontsize=7, loc="upper left")
    fig.axes[-1].set_xlabel("offered rate (requests/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def latency(result: FamilyResult, path: Path) -> Path:
    metrics = ["e2e_ms", "ttft_ms", "tpot_ms"] if result.family.streams else ["e2e_ms"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 3.2 * len(metrics)), sharex=True, squeeze=False)
    fig.suptitle(f"{result.family.name} ({result.family.route}): latency against offered rate")
    rates = [s.rate_per_s for s in result.steps]
    for ax, metric in zip((a[0] for a in axes), metrics, strict=True):
        for key in ("p50", "p99"):
            ax.plot(rates, [_value(getattr(s.figures, metric), key) for s in result.steps], marker="o",
                    label=f"{metric.removesuffix('_ms').upper()} {key}")
        ax.set_ylabel("ms")
    return _save(fig, result, path)


def goodput(result: FamilyResult, path: Path) -> Path:
    fig, axes = plt.subplots(1, 1, figsize=(9, 4), squeeze=False)
    ax = axes[0][0]
    fig.suptitle(f"{result.family.name} ({result.family.route}): served and good requests per second")
    rates = [s.rate_per_s for s in result.steps]
    ax.plot(rates, rates, color="grey", linestyle=":", label="served = offered")
    ax.plot(rates, [s.figures.throughput_per_s for s in result.steps], marker="o", label="served/s")
    ax.plot(rates, [s.figures.goodput_per_s for s in result.steps], marker="o", label="good/s")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("requests/s")
    return _save(fig, result, path)


def draw(result: FamilyResult, out: Path) -> list[Path]:
    return [latency(result, out / "latency.png"), goodput(result, out / "goodput.png")]
