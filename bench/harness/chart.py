"""chart.png: throughputs (jobs/s) and the Tasklane ÷ Celery ratios, on log scales."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness.common import SYSTEMS


def _side(system: str) -> str:
    return "Tasklane" if system.startswith("tl") else "Celery"


def chart(summary: dict[str, Any], path: Path, env: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {s.key: s.label for s in SYSTEMS.values()}
    labels.update(
        {
            "tl_procfile_direct": "Tasklane Procfile line, direct",
            "tl_procfile_api": "Tasklane Procfile line, API",
        }
    )
    bars = [
        (f"a. drain: {labels[f['system']]}", f)
        for f in summary["figures"]
        if f["workload"] == "a" and f["metric"] == "rate_exec"
    ]
    bars += [(f"e. I/O: {labels[f['system']]}", f) for f in summary["figures"] if f["workload"] == "e"]
    bars += [
        (f"b. enqueue: {f['figure'].split(', ')[1]} ({_side(f['system'])})", f)
        for f in summary["figures"]
        if f["workload"] == "b"
    ]
    ratios = [r for r in summary["ratios"] if r["median"] is not None]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, max(6, 0.42 * max(len(bars), len(ratios)) + 2)))
    names, medians, lo, hi, colors = [], [], [], [], []
    for name, f in bars:
        names.append(name + ("" if f["state"] == "ok" else f" [{f['state']}]"))
        m = f["median"] or 0.0
        medians.append(m)
        lo.append(m - (f["min"] or m))
        hi.append((f["max"] or m) - m)
        colors.append("#2b7bba" if f["system"].startswith("tl") else "#d9822b")
    y = list(range(len(names)))
    ax1.barh(y, medians, xerr=[lo, hi], color=colors, capsize=3)
    ax1.set_yticks(y, names, fontsize=8)
    ax1.invert_yaxis()
    if any(medians):
        ax1.set_xscale("log")
    ax1.set_xlabel("jobs/s (median, min\u2013max), log scale")
    ax1.set_title("Throughput (blue: Tasklane, orange: Celery)")
    for yi, m, h in zip(y, medians, hi, strict=True):
        if m:
            ax1.text((m + h) * 1.08, yi, f"{m:,.0f}", va="center", fontsize=7)

    rnames = [r["label"] for r in ratios]
    rmed = [r["median"] for r in ratios]
    rlo = [r["median"] - r["min"] for r in ratios]
    rhi = [r["max"] - r["median"] for r in ratios]
    ry = list(range(len(rnames)))
    rcolors = [
        "#3a923a" if ((m >= 1) != ("lower is better" in n)) else "#c23b3b"
        for n, m in zip(rnames, rmed, strict=True)
    ]
    ax2.barh(ry, rmed, xerr=[rlo, rhi], color=rcolors, capsize=3)
    ax2.set_yticks(ry, rnames, fontsize=8)
    ax2.invert_yaxis()
    if rmed:
        ax2.set_xscale("log")
    ax2.axvline(1.0, color="black", linewidth=0.8)
    ax2.set_xlabel("Tasklane \u00f7 Celery, per-round ratio (median, min\u2013max), log scale")
    ax2.set_title("Ratios (green: Tasklane better, red: worse)")
    for yi, m, h in zip(ry, rmed, rhi, strict=True):
        ax2.text((m + h) * 1.08, yi, f"{m:.2f}", va="center", fontsize=7)
    fig.suptitle(
        f"Tasklane vs Celery {env.get('celery', {}).get('celery', '')}, profile {env.get('profile')}, "
        f"{env.get('repeats')} rounds, {env['machine'].get('cpus')} CPUs, {env.get('date')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
