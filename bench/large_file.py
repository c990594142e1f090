"""Throughput of process_large_file's loader into SQLite, with and without progress reporting.

    .venv/bin/python bench/large_file.py [LINES]     # default 1,000,000

It generates a CSV (1 line in 50 invalid), starts a throw-away redis-server, and loads the
file three ways into a fresh SQLite database each time: no progress at all; progress
written into a real RQ job's meta (what report_progress does inside a worker); and the
same with the write forced every 100 lines (no time throttle), to show what throttling
saves. It prints lines/s for each, by wall and by CPU time (on a shared machine the
wall time drifts with the others' load; the CPU time of this process does not, and
the progress writes' round trips to Redis are counted in the wall figure), and the
peak RSS of the process.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis
from sqlalchemy import insert

from app.core.queues import JsonJob
from app.foundation.db import make_engine
from app.foundation.meta import Meta
from app.foundation.models import Base, FileImport
from app.tasks.documents import LoadCounts, load_file

#: The columns the records must have, typed (so that every 50th line is rejected).
COLUMNS = {"id": "integer", "name": "string", "email": "email", "amount": "number", "date": "date"}


def make_csv(path: Path, lines: int) -> None:
    """A CSV of ``lines`` records after the header; every 50th is invalid."""
    with path.open("w") as f:
        f.write("id,name,email,amount,date\n")
        for i in range(1, lines + 1):
            if i % 50 == 0:
                f.write(f"{i},Name {i},not-an-email,{i * 0.01:.2f},2026-02-30\n")
            else:
                f.write(
                    f"{i},Name {i},user{i}@example.com,{i * 0.01:.2f},"
                    f"2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}\n"
                )


def run(path: Path, directory: Path, report: object) -> tuple[float, float, LoadCounts]:
    engine = make_engine(f"sqlite:///{directory}/bench-{time.monotonic_ns()}.db")
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        import_id = conn.execute(
            insert(FileImport).values(job_id=str(time.time_ns()), path=str(path), format="csv")
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.commit()
        started, cpu = time.perf_counter(), time.process_time()
        with path.open("rb") as fh:
            counts = load_file(fh, "csv", path.stat().st_size, conn, import_id, report, columns=COLUMNS)  # type: ignore[arg-type]
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.dispose()
    return elapsed, cpu, counts


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    directory = Path(tempfile.mkdtemp(prefix="bench-large-"))
    binary = shutil.which("redis-server") or "redis-server"
    port = 6390 + os.getpid() % 500
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.3)
        redis = Redis(port=port)
        job = JsonJob.create(func="app.tasks.platform.add", kwargs={"x": 1, "y": 2}, connection=redis)
        job.save()
        writes = [0]

        def throttled(min_interval: float):  # type: ignore[no-untyped-def]
            last = [0.0]

            def report(current: int, total: int, counts: LoadCounts) -> None:
                now = time.monotonic()
                if now - last[0] >= min_interval:
                    last[0] = now
                    writes[0] += 1
                    job.meta[Meta.PROGRESS] = {
                        "current": current,
                        "total": total,
                        "percent": round(100 * current / max(total, 1), 1),
                    }
                    job.save_meta()

            return report

        path = directory / "big.csv"
        make_csv(path, lines)
        print(f"{lines} lines, {path.stat().st_size / 1e6:.1f} MB")
        results = {}
        for label, report in [
            ("no progress", None),
            ("progress (0.5 s throttle)", throttled(0.5)),
            ("progress every 100 lines", throttled(0.0)),
            ("no progress (again)", None),
        ]:
            writes[0] = 0
            elapsed, cpu, counts = run(path, directory, report)
            results[label] = lines / cpu
            print(
                f"{label:28} {elapsed:6.2f} s wall {lines / elapsed:9,.0f} lines/s;"
                f" {cpu:6.2f} s CPU {lines / cpu:9,.0f} lines/s  "
                f"loaded {counts.loaded} rejected {counts.rejected}  meta writes {writes[0]}"
            )
        base = (results["no progress"] + results["no progress (again)"]) / 2
        print("progress cost, from CPU time (the machine is shared, so wall time drifts with others' load):")
        print(f"progress cost (throttled): {100 * (1 - results['progress (0.5 s throttle)'] / base):.1f} %")
        print(
            f"progress cost (every 100 lines): {100 * (1 - results['progress every 100 lines'] / base):.1f} %"
        )
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
