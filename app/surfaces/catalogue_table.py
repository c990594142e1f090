"""The catalogue table of docs/TASKS.md, made from the registry: ``python -m app.surfaces.catalogue_table``.

It rewrites the table between the markers in docs/TASKS.md (``--check`` only says whether the
table there is current, exit status 1 when it is stale). The table shows the declarations,
without the operator's TASK_OVERRIDES.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.catalogue.registry import REGISTRY, TaskSpec

BEGIN = "<!-- catalogue:begin (python -m app.surfaces.catalogue_table) -->"
END = "<!-- catalogue:end -->"
README = Path(__file__).resolve().parents[2] / "docs" / "TASKS.md"


def _arguments(spec: TaskSpec) -> str:
    fields = spec.input_model.model_fields
    if not fields:
        return "—"
    return ", ".join(name if field.is_required() else f"{name}?" for name, field in fields.items())


def _policy(spec: TaskSpec) -> str:
    parts = [f"time limit {spec.time_limit} s"]
    if spec.soft_time_limit:
        parts.append(f"soft {spec.soft_time_limit} s")
    if spec.retry.max_retries:
        parts.append(f"retries {spec.retry.max_retries}")
    if spec.rate_limit:
        parts.append(f"rate {spec.rate_limit.text}")
        if spec.rate_key:
            parts.append(f"per {spec.rate_key}")
        if spec.burst:
            parts.append(f"burst {spec.burst}")
    if spec.concurrency:
        parts.append(f"concurrency {spec.concurrency}")
    if spec.unique:
        parts.append("unique")
    if spec.schedule:
        when = spec.schedule.cron or f"every {spec.schedule.interval} s"
        parts.append(f"schedule {when}")
    return ", ".join(parts)


def table() -> str:
    """The Markdown table of every task in the catalogue (app/tasks; not TASK_MODULES)."""
    rows = ["| task | arguments (? optional) | queue | policy | what it does |", "|---|---|---|---|---|"]
    for spec in REGISTRY.all_declared():
        if not spec.path.startswith("app.tasks."):
            continue
        cells = (f"`{spec.name}`", _arguments(spec), spec.queue.value, _policy(spec), spec.description)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def render(text: str) -> str:
    """``text`` (docs/TASKS.md) with the table between the markers replaced by the current one."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table() + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the table of docs/TASKS.md, or with ``--check`` exit 1 when it is stale."""
    parser = argparse.ArgumentParser(prog="python -m app.surfaces.catalogue_table", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(
                f"{args.readme}: the catalogue table is stale; run python -m app.surfaces.catalogue_table",
                file=sys.stderr,
            )
            return 1
        return 0
    if new != text:
        args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
