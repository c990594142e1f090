"""Summary and results.md: medians, spreads, ratios within the same round; the notes."""

from __future__ import annotations

import statistics
from typing import Any

from bench.harness.common import (
    CEL_PREFORK,
    DASH,
    DRAMATIQ,
    SYSTEMS,
    TIMES,
    TL_FORK,
    TL_INLINE,
    TL_POOLED,
    TL_THREADS,
    WORKLOADS,
)
from bench.harness.workloads.procfile import TL_PROCFILE_API, TL_PROCFILE_DIRECT

#: (workload, run key, system key, metric, figure text, unit, decimals)
_START_END = "jobs/s, first start \u2192 last end (job timestamps)"
_WALL = "jobs/s incl. startup: launch \u2192 last end"
_CMDS = "Redis commands per job, worker side"
_ENQ_CMDS = "Redis commands per job, enqueue side (loop)"
_DRAIN_CMDS = "drain_cmds_per_job"
# fmt: off
_RCPU = "Redis CPU s per 1,000 jobs (INFO cpu, while draining)"
_CEIL = "projected ceiling of one Redis core (1,000 \u00f7 Redis CPU s per 1,000 jobs)"
FIGURES: list[tuple[str, str, str, str, str, str, int]] = [
    ("a", "drain", "tl_pooled", "rate_exec", _START_END, "jobs/s", 0),
    ("a", "drain", "tl_fork", "rate_exec", _START_END, "jobs/s", 0),
    ("a", "drain", "tl_inline", "rate_exec", _START_END, "jobs/s", 0),
    ("a", "drain", "tl_threads", "rate_exec", _START_END, "jobs/s", 0),
    ("a", "drain", "cel_prefork", "rate_exec", "jobs/s, worker ready \u2192 last result stored", "jobs/s", 0),
    ("a", "drain", "dramatiq", "rate_exec", "jobs/s, last process booted \u2192 all results stored",
     "jobs/s", 0),
    ("a", "drain", "tl_procfile_direct", "rate_exec", _START_END, "jobs/s", 0),
    ("a", "drain", "tl_procfile_api", "rate_exec", _START_END, "jobs/s", 0),
    ("a", "drain", "tl_procfile_api", "api_rps", "POST /api/v1/tasks/add req/s (16 connections)", "req/s", 0),
    ("a", "drain", "tl_procfile_api", "api_p50_ms", "POST p50 latency while loading", "ms", 2),
    ("a", "drain", "tl_procfile_api", "api_p99_ms", "POST p99 latency while loading", "ms", 2),
    ("a", "drain", "tl_pooled", "rate_wall", _WALL, "jobs/s", 0),
    ("a", "drain", "tl_fork", "rate_wall", _WALL, "jobs/s", 0),
    ("a", "drain", "tl_inline", "rate_wall", _WALL, "jobs/s", 0),
    ("a", "drain", "tl_threads", "rate_wall", _WALL, "jobs/s", 0),
    ("a", "drain", "cel_prefork", "rate_wall", "jobs/s incl. startup: worker start \u2192 all results ready",
     "jobs/s", 0),
    ("a", "drain", "dramatiq", "rate_wall", "jobs/s incl. startup: worker start \u2192 all results stored",
     "jobs/s", 0),
    *[("a", "drain", k, "redis_cpu_s_per_1000", _RCPU, "s", 3)
      for k in ("tl_pooled", "tl_inline", "tl_fork", "cel_prefork", "dramatiq")],
    *[("a", "drain", k, "redis_core_ceiling", _CEIL, "jobs/s", 0)
      for k in ("tl_pooled", "tl_inline", "cel_prefork", "dramatiq")],
    ("b", "enqueue", "tl_loop", "rate", "jobs/s, enqueue loop", "jobs/s", 0),
    ("b", "enqueue", "tl_many", "rate", "jobs/s, batch enqueue", "jobs/s", 0),
    ("b", "enqueue", "cel_apply", "rate", "jobs/s, apply_async loop", "jobs/s", 0),
    ("c", "latency", "tl_inline", "p50_ms", "p50 latency, 1 process", "ms", 2),
    ("c", "latency", "tl_inline", "p99_ms", "p99 latency, 1 process", "ms", 2),
    ("c", "latency", "tl_fork", "p50_ms", "p50 latency, 2 processes", "ms", 2),
    ("c", "latency", "tl_fork", "p99_ms", "p99 latency, 2 processes", "ms", 2),
    ("c", "latency", "cel_prefork", "p50_ms", "p50 latency, concurrency 2", "ms", 2),
    ("c", "latency", "cel_prefork", "p99_ms", "p99 latency, concurrency 2", "ms", 2),
    ("d", "http", "api", "rps", "requests/s (wrk -t2 -c16)", "req/s", 0),
    ("d", "http", "api", "p50_ms", "p50 latency", "ms", 2),
    ("d", "http", "api", "p99_ms", "p99 latency", "ms", 2),
    ("d", "http", "api", "non2xx", "non-2xx answers (counted by post.lua)", "", 0),
    ("d", "http", "api", "socket_errors", "socket errors (connect, read, write, timeout)", "", 0),
    ("d", "http", "api", "jobs_per_2xx", "jobs found in Redis per 2xx answer (check)", "", 3),
    ("d", "http", "api", "busiest_worker_cpu_share", "CPU share of the busiest gunicorn worker", "", 2),
    ("d", "http", "api", "direct_enqueue_rate", "direct dispatch.enqueue, same round", "jobs/s", 0),
    ("d", "http", "api", "api_cost_ratio", "API cost per enqueue: direct jobs/s \u00f7 API req/s", TIMES, 2),
    ("d", "http", "api", "api_cpu_us_per_request", "gunicorn CPU per answered request", "\u00b5s", 0),
    ("d", "http", "api", "direct_cpu_us_per_enqueue", "direct loop's CPU per dispatch.enqueue", "\u00b5s", 0),
    ("d", "http", "api", "api_cpu_cost_ratio", "API CPU per enqueue \u00f7 direct CPU", TIMES, 2),
    ("e", "io", "tl_threads", "rate_exec", "jobs/s, 2 processes \u00d7 16 threads", "jobs/s", 0),
    ("e", "io", "cel_prefork", "rate_exec", "jobs/s, concurrency 2, ready \u2192 last result", "jobs/s", 0),
    ("e", "io", "cel_threads", "rate_exec", "jobs/s, 1 process \u00d7 16 threads (reference)", "jobs/s", 0),
    ("f", "memory", "tl_inline", "rss_start_mib", "RSS after start (process tree)", "MiB", 1),
    ("f", "memory", "tl_inline", "rss_after_mib", "RSS after the drain (process tree)", "MiB", 1),
    ("f", "memory", "tl_inline", "pss_after_mib", "PSS after the drain (process tree)", "MiB", 1),
    ("f", "memory", "tl_inline", "largest_process_after_mib", "RSS of the largest process after", "MiB", 1),
    ("f", "memory", "cel_prefork", "rss_start_mib", "RSS after start (main + 2 children)", "MiB", 1),
    ("f", "memory", "cel_prefork", "rss_after_mib", "RSS after the drain (main + 2 children)", "MiB", 1),
    ("f", "memory", "cel_prefork", "pss_after_mib", "PSS after the drain (main + 2 children)", "MiB", 1),
    ("f", "memory", "cel_prefork", "largest_process_after_mib", "RSS of the largest process after", "MiB", 1),
    ("g", "commands", "tl_pooled", "drain_cmds_per_job", _CMDS, "", 1),
    ("g", "commands", "tl_fork", "drain_cmds_per_job", _CMDS, "", 1),
    ("g", "commands", "tl_inline", "drain_cmds_per_job", _CMDS, "", 1),
    ("g", "commands", "tl_threads", "drain_cmds_per_job", _CMDS, "", 1),
    ("g", "commands", "cel_prefork", "drain_cmds_per_job", _CMDS, "", 1),
    ("g", "commands", "dramatiq", "drain_cmds_per_job", _CMDS, "", 1),
    ("g", "commands", "tl_inline", "enqueue_cmds_per_job", _ENQ_CMDS, "", 1),
    ("g", "commands", "cel_prefork", "enqueue_cmds_per_job", _ENQ_CMDS, "", 1),
    ("g", "commands", "dramatiq", "enqueue_cmds_per_job", _ENQ_CMDS, "", 1),
]

_LOWER = " (lower is better)"
#: (label, workload, run key, numerator system, denominator system, metric): Tasklane / Celery.
RATIOS: list[tuple[str, str, str, str, str, str]] = [
    ("drain: pooled / Celery prefork", "a", "drain", "tl_pooled", "cel_prefork", "rate_exec"),
    ("drain: pooled / Dramatiq", "a", "drain", "tl_pooled", "dramatiq", "rate_exec"),
    ("drain: inline / Dramatiq", "a", "drain", "tl_inline", "dramatiq", "rate_exec"),
    ("drain incl. startup: pooled / Celery prefork", "a", "drain", "tl_pooled", "cel_prefork", "rate_wall"),
    ("drain incl. startup: pooled / Dramatiq", "a", "drain", "tl_pooled", "dramatiq", "rate_wall"),
    ("Redis CPU per job: pooled / Celery" + _LOWER, "a", "drain", "tl_pooled", "cel_prefork",
     "redis_cpu_s_per_1000"),
    ("Redis CPU per job: pooled / Dramatiq" + _LOWER, "a", "drain", "tl_pooled", "dramatiq",
     "redis_cpu_s_per_1000"),
    ("drain: Procfile line, direct / Celery prefork", "a", "drain", "tl_procfile_direct", "cel_prefork",
     "rate_exec"),
    ("drain: Procfile line, via API / Celery prefork", "a", "drain", "tl_procfile_api", "cel_prefork",
     "rate_exec"),
    ("drain: Procfile line, direct / Dramatiq", "a", "drain", "tl_procfile_direct", "dramatiq", "rate_exec"),
    ("drain: Procfile line, via API / Dramatiq", "a", "drain", "tl_procfile_api", "dramatiq", "rate_exec"),
    ("drain: fork / Celery prefork", "a", "drain", "tl_fork", "cel_prefork", "rate_exec"),
    ("drain: inline / Celery prefork", "a", "drain", "tl_inline", "cel_prefork", "rate_exec"),
    ("drain: threads / Celery prefork", "a", "drain", "tl_threads", "cel_prefork", "rate_exec"),
    ("drain incl. startup: fork / Celery prefork", "a", "drain", "tl_fork", "cel_prefork", "rate_wall"),
    ("drain incl. startup: inline / Celery prefork", "a", "drain", "tl_inline", "cel_prefork", "rate_wall"),
    ("drain incl. startup: threads / Celery prefork", "a", "drain", "tl_threads", "cel_prefork", "rate_wall"),
    ("enqueue: loop / apply_async", "b", "enqueue", "tl_loop", "cel_apply", "rate"),
    ("enqueue: batch / apply_async", "b", "enqueue", "tl_many", "cel_apply", "rate"),
    ("latency p50: inline / Celery" + _LOWER, "c", "latency", "tl_inline", "cel_prefork", "p50_ms"),
    ("latency p99: inline / Celery" + _LOWER, "c", "latency", "tl_inline", "cel_prefork", "p99_ms"),
    ("latency p50: fork / Celery" + _LOWER, "c", "latency", "tl_fork", "cel_prefork", "p50_ms"),
    ("latency p99: fork / Celery" + _LOWER, "c", "latency", "tl_fork", "cel_prefork", "p99_ms"),
    ("I/O: threads / Celery prefork", "e", "io", "tl_threads", "cel_prefork", "rate_exec"),
    ("I/O: threads / Celery threads", "e", "io", "tl_threads", "cel_threads", "rate_exec"),
    ("RSS after drain: inline / Celery prefork" + _LOWER, "f", "memory", "tl_inline", "cel_prefork",
     "rss_after_mib"),
    ("PSS after drain: inline / Celery prefork" + _LOWER, "f", "memory", "tl_inline", "cel_prefork",
     "pss_after_mib"),
    ("commands/job: pooled / Celery" + _LOWER, "g", "commands", "tl_pooled", "cel_prefork", _DRAIN_CMDS),
    ("commands/job: pooled / Dramatiq" + _LOWER, "g", "commands", "tl_pooled", "dramatiq", _DRAIN_CMDS),
    ("commands/job: fork / Celery" + _LOWER, "g", "commands", "tl_fork", "cel_prefork", _DRAIN_CMDS),
    ("commands/job: inline / Celery" + _LOWER, "g", "commands", "tl_inline", "cel_prefork", _DRAIN_CMDS),
    ("commands/job: threads / Celery" + _LOWER, "g", "commands", "tl_threads", "cel_prefork", _DRAIN_CMDS),
    ("enqueue commands/job: loop / apply_async" + _LOWER, "g", "commands", "tl_inline", "cel_prefork",
     "enqueue_cmds_per_job"),
]
# fmt: on


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"values": [], "median": None, "min": None, "max": None}
    return {"values": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def _runs(results: dict[str, Any], wl: str, key: str, system: str) -> list[dict[str, Any]]:
    return list(results["workloads"].get(wl, {}).get("runs", {}).get(key, {}).get(system, []))


def _state(runs: list[dict[str, Any]]) -> tuple[str, str]:
    """("ok" | "not available" | "error" | "not run", reason)."""
    if not runs:
        return "not run", ""
    if any(r.get("status") == "ok" for r in runs):
        return "ok", ""
    last = runs[-1]
    return str(last.get("status")), str(last.get("reason", ""))


def _values(runs: list[dict[str, Any]], metric: str) -> list[float]:
    return [float(r[metric]) for r in runs if r.get("status") == "ok" and r.get(metric) is not None]


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    figures = []
    for wl, key, system, metric, text, unit, decimals in FIGURES:
        runs = _runs(results, wl, key, system)
        values = [float(r[metric]) for r in runs if r.get("status") == "ok" and r.get(metric) is not None]
        state, reason = _state(runs)
        n = next((r.get("n") for r in runs if r.get("status") == "ok"), None)
        figures.append(
            {
                "workload": wl,
                "key": key,
                "system": system,
                "metric": metric,
                "figure": text,
                "unit": unit,
                "decimals": decimals,
                "state": state,
                "reason": reason,
                "n": n,
                **spread(values),
                "errors": sum(1 for r in runs if r.get("status") == "error"),
            }
        )
    ratios = []
    for label, wl, key, num, den, metric in RATIOS:
        a, b = _runs(results, wl, key, num), _runs(results, wl, key, den)
        by_round = {r["round"]: r for r in b if r.get("status") == "ok" and r.get(metric)}
        values = [
            float(r[metric]) / float(by_round[r["round"]][metric])
            for r in a
            if r.get("status") == "ok" and r.get(metric) is not None and r["round"] in by_round
        ]
        ratios.append(
            {
                "label": label,
                "workload": wl,
                "numerator": num,
                "denominator": den,
                "metric": metric,
                **spread(values),
            }
        )
    scaling = {}
    for key, field in (("queue_length", "rate_exec"), ("processes", "rate_exec")):
        rows = results["workloads"].get("g", {}).get("runs", {}).get(key, {})
        scaling[key] = {
            system: {
                **spread([float(r[field]) for r in runs if r.get("status") == "ok"]),
                "redis_cpu_s_per_1000": spread(_values(runs, "redis_cpu_s_per_1000")),
                "state": _state(runs)[0],
                "reason": _state(runs)[1],
            }
            for system, runs in rows.items()
        }
    return {"figures": figures, "ratios": ratios, "scaling": scaling}


def fmt(value: float | None, decimals: int) -> str:
    if value is None:
        return ""
    if decimals == 0 and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{decimals}f}"


def fmt_ratio(r: dict[str, Any]) -> str:
    if r.get("median") is None:
        return ""
    return f"{r['median']:.2f}{TIMES} ({r['min']:.2f}{DASH}{r['max']:.2f})"


def render_markdown(results: dict[str, Any], summary: dict[str, Any]) -> str:
    env = results["environment"]
    labels = {s.key: s.label for s in SYSTEMS.values()}
    labels.update({s.key: s.label for s in (TL_PROCFILE_DIRECT, TL_PROCFILE_API)})
    labels.update(
        {"tl_loop": "Tasklane", "tl_many": "Tasklane", "cel_apply": "Celery", "api": "Tasklane API"}
    )
    ratio_for: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in summary["ratios"]:
        ratio_for.setdefault((r["workload"], r["numerator"], r["metric"]), []).append(r)
    lines = [
        "# Tasklane vs Celery and Dramatiq: results",
        "",
        f"Run of {env.get('date')}, profile `{env.get('profile')}`{' (--full)' if env.get('full') else ''}, "
        f"{env.get('repeats')} rounds per workload ({env.get('memory_repeats')} for memory, "
        f"{env.get('scaling_repeats')} for g's scaling runs); "
        f"{env['machine'].get('cpus')} CPUs ({env['machine'].get('cpu')}), "
        f"redis-server {env.get('redis_server')} started by the bench on loopback (no persistence), "
        f"Celery {env.get('celery', {}).get('celery')}, "
        f"Dramatiq {env.get('dramatiq', {}).get('dramatiq')}, RQ {env.get('tasklane', {}).get('rq')}, "
        f"Python {env.get('tasklane', {}).get('python')}. Total time {env.get('total_seconds', 0):.0f} s.",
        "",
        "Every figure is the median of the rounds, with the min"
        + DASH
        + "max spread in brackets. A ratio is "
        "Tasklane \u00f7 anchor (Celery or Dramatiq) computed within each round (same Redis, same minute), "
        "then the median and spread of those per-round ratios. Above 1 means Tasklane is higher: better for "
        "jobs/s, worse for latency, memory, Redis CPU and commands. The machine is shared with other "
        "engineers' test runs, so absolute figures move between rounds; the ratios within a round are the "
        "figures to read.",
        "",
        "| Workload | System | Figure | Median | Spread (min" + DASH + "max) | Tasklane \u00f7 anchor |",
        "|---|---|---|---:|---:|---|",
    ]
    for f in summary["figures"]:
        wl = f["workload"]
        title = f"{wl}. {WORKLOADS[wl]}"
        n = f" (N={f['n']:,})" if f.get("n") else ""
        system = labels.get(f["system"], f["system"]) + (n if wl in "abefg" else "")
        if f["state"] == "ok":
            median = f"{fmt(f['median'], f['decimals'])} {f['unit']}".strip()
            spr = f"{fmt(f['min'], f['decimals'])}{DASH}{fmt(f['max'], f['decimals'])}"
            if f["errors"]:
                spr += f" ({f['errors']} round(s) failed)"
        else:
            median = f["state"]
            spr = f["reason"].replace("|", "/")[:160]
        ratio_text = "; ".join(
            f"{fmt_ratio(r)} vs {labels.get(r['denominator'], r['denominator'])}"
            for r in ratio_for.get((wl, f["system"], f["metric"]), [])
            if r["median"] is not None
        )
        lines.append(f"| {title} | {system} | {f['figure']} | {median} | {spr} | {ratio_text} |")
    for key, text in (
        ("queue_length", "pooled, 2 processes: jobs/s of the first jobs vs queue length"),
        ("processes", "pooled: jobs/s vs worker processes (burst drain)"),
    ):
        for system, s in summary["scaling"].get(key, {}).items():
            runs = results["workloads"]["g"]["runs"][key][system]
            label = next((r for r in runs if r.get("status") == "ok"), {})
            name = system
            if key == "queue_length":
                length, measured = label.get("length", 0), label.get("measured_jobs", 0)
                name = f"{length:,} waiting, first {measured:,} measured"
            else:
                name = f"{system[1:]} process(es), N={label.get('n', '?'):,}"
            if s["state"] == "ok":
                median = f"{fmt(s['median'], 0)} jobs/s"
                spr = f"{fmt(s['min'], 0)}{DASH}{fmt(s['max'], 0)}"
                cpu = s.get("redis_cpu_s_per_1000", {})
                if cpu.get("median") is not None:
                    median += f"; Redis {cpu['median']:.3f} s/1,000 jobs"
                    spr += f"; Redis {cpu['min']:.3f}{DASH}{cpu['max']:.3f}"
            else:
                median, spr = s["state"], s["reason"].replace("|", "/")[:160]
            lines.append(f"| g. scaling | Tasklane {name} | {text} | {median} | {spr} | |")
    lines += commands_breakdown(results)
    lines += ["", "## Notes", ""]
    lines += notes(results, summary)
    return "\n".join(lines) + "\n"


def commands_breakdown(results: dict[str, Any]) -> list[str]:
    """g: the commands behind the per-job figure, from each system's first good round."""
    runs = results["workloads"].get("g", {}).get("runs", {}).get("commands", {})
    lines = []
    for system, label in ((s.key, s.label) for s in (TL_POOLED, TL_FORK, TL_INLINE, TL_THREADS, CEL_PREFORK,
                                                     DRAMATIQ)):  # fmt: skip
        ok = next((r for r in runs.get(system, []) if r.get("status") == "ok"), None)
        if ok is None:
            continue
        drain = ", ".join(f"`{k}` {v:.2f}" for k, v in ok["drain_cmds_top"].items())
        enqueue = ", ".join(f"`{k}` {v:.2f}" for k, v in ok["enqueue_cmds_top"].items())
        lines.append(f"| {label} (N={ok['n']:,}) | {drain} | {enqueue} |")
    if not lines:
        return []
    return [
        "",
        "## g. Redis commands per job, by command (first round)",
        "",
        "| System | Worker side (top 10) | Enqueue side |",
        "|---|---|---|",
        *lines,
    ]


def skewed_api_rounds(results: dict[str, Any]) -> list[str]:
    """d: rounds where one gunicorn worker process served (nearly) all keep-alive connections."""
    runs = results["workloads"].get("d", {}).get("runs", {}).get("http", {}).get("api", [])
    ok = [r for r in runs if r.get("status") == "ok" and r.get("busiest_worker_cpu_share") is not None]
    skewed = [r for r in ok if r["busiest_worker_cpu_share"] > 0.9]
    if not skewed:
        return []
    rates = ", ".join(
        f"round {r['round']}: {r['rps']:,.0f} req/s ({r['busiest_worker_cpu_share']:.2f})" for r in ok
    )
    return [
        f"- d. In {len(skewed)} of {len(ok)} rounds one gunicorn worker process took over 90% of the CPU "
        "used by both: wrk's 16 keep-alive connections were (nearly) all accepted by one process, which "
        f"then served them alone, at about half the rate (busiest worker's CPU share in brackets: {rates}). "
        "This is how gunicorn with WEB_CONCURRENCY=2 behaves when there are few long-lived client "
        "connections. It is not an artefact of the harness."
    ]


def notes(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    env = results["environment"]
    p = env["sizes"]
    out = []
    busy = env.get("cpu_busy_before_pct")
    if busy is not None:
        warn = " **Other load was present: figures are less reliable.**" if busy > 10 else ""
        out.append(f"- CPU busy before the run, with nothing of the benchmark's running: {busy:.0f}%.{warn}")
    for wl, store in results["workloads"].items():
        if store.get("other_processes_at_start"):
            out.append(
                f"- **During workload {wl} other test/benchmark processes were running** "
                f"(e.g. `{store['other_processes_at_start'][0]}`): its figures are less reliable."
            )
    for mode, info in env.get("worker_modes", {}).items():
        if not info.get("available"):
            out.append(f"- Tasklane `--mode {mode}`: **not available** ({info.get('reason')}).")
    tl = env.get("tasklane", {})
    out.append(
        "- `app.dispatch.enqueue_many`: "
        + (
            f"present `{tl.get('enqueue_many')}`."
            if tl.get("enqueue_many")
            else "not present in this checkout."
        )
    )
    if env.get("git", {}).get("app_uncommitted_changes"):
        out.append(
            f"- Measured on commit {env['git'].get('head')} **plus uncommitted changes** in app/, worker.py."
        )
    out += [
        "- Workers: `python worker.py default [--burst] --concurrency P --mode M [--threads 16]` "
        "(cwd = project root, `TASK_MODULES=bench.bench_tasks`, `LOG_LEVEL=WARNING`); "
        "`celery -A bench.celery_app worker --concurrency 2 --loglevel WARNING` (prefork) or "
        "`--pool threads --concurrency 16`; `dramatiq bench.dramatiq_app --processes 2 --threads 8` "
        "(Redis broker, Results middleware with the Redis backend, every actor storing its result).",
        "- a. Dramatiq: N messages preloaded with `actor.send`, then the worker is started; it stores no "
        "completion time with a result, so its last job's end is the 20 ms poll that first finds every "
        "result key (slightly in Celery's and Tasklane's favour). Redis CPU per 1,000 jobs is INFO cpu "
        "(user + sys) over the drain, the harness's own polling included, for every system alike.",
        "- a. Tasklane: N jobs preloaded, then 2 burst worker processes; jobs/s = N \u00f7 "
        "(last `ended_at` \u2212 first `started_at`) from the RQ job hashes (JsonJob.fetch_many). "
        "Fork mode drains "
        f"N={p['fork_drain_n']:,} instead of {p['drain_n']:,} (one fork per job: about 10{TIMES} slower), to "
        "keep the run short. Celery: N tasks preloaded with apply_async, then the worker is started; the "
        "first figure runs from the worker_ready signal to the last result's `date_done`, the "
        "\u201cincl. startup\u201d one from launching the worker until all results are ready (last "
        "`date_done`), as for Tasklane from launching worker.py to the last `ended_at`.",
        "- b. One Python process, no worker running, after 200 warm-up jobs; Tasklane = "
        "`app.dispatch.enqueue(spec, spec.validate(args), redis, default_result_ttl=..., failure_ttl=...)`.",
        "- c. Sequential jobs, each enqueued then waited for: Tasklane `job.latest_result(timeout=5)` "
        "(blocks on the result stream), Celery `AsyncResult.get(timeout=5)`; 10 warm-up jobs first.",
        "- d. `gunicorn 'app:create_app()' --bind 127.0.0.1:PORT` with WEB_CONCURRENCY=2 (gthread, 4 "
        "threads each, access log on), loaded by `wrk -t2 -c16 -d"
        f"{p['wrk_duration']}s --latency -s bench/post.lua`; wrk, gunicorn and Redis share the 2 CPUs. "
        "Non-2xx answers are counted by the Lua script.",
        *skewed_api_rounds(results),
        "- e. 2 worker processes for the main comparison; Celery threads is one process with 16 threads.",
        "- f. VmRSS from /proc, summed over the worker's process tree (Tasklane inline with "
        "`--concurrency 1` = supervisor + 1 worker process; Celery prefork = main + 2 pool children), "
        "sampled 1 s after start and after all N jobs are done (enqueued while the worker runs). "
        "Summed RSS counts pages a forked child shares with its parent once per process; PSS "
        "(smaps_rollup) splits them, so it is the fairer total for both forked trees.",
        "- g. INFO commandstats deltas \u00f7 N (INFO itself and the harness's own polling excluded); "
        "\u201cworker side\u201d includes worker start-up and shutdown. Queue-length runs preload with a "
        "pipelined bulk enqueue (or enqueue_many when present).",
    ]
    return out
