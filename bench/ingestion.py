"""Throughput of file_ingestion with the local hashing embedder, in chunks per second.

    .venv/bin/python bench/ingestion.py [FILES]     # default 200 files of about 20 KB

It writes Markdown files of generated prose into a temporary INPUT_DIRS, creates the
schema in a temporary SQLite database, and calls the task in-process (extraction,
chunking, embedding, storing; no Redis round trips), then calls it again to show that
re-ingesting unchanged files is a no-op.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from app.foundation.models import Base
from app.foundation.runtime import runtime
from app.tasks.documents import file_ingestion

WORDS = [
    "harbour",
    "crane",
    "timber",
    "glacier",
    "valley",
    "river",
    "bread",
    "dough",
    "oven",
    "volcano",
    "lava",
    "crater",
    "ferry",
    "ticket",
    "coffee",
    "market",
    "report",
    "revenue",
    "region",
    "cost",
    "engine",
    "signal",
    "worker",
    "queue",
    "job",
    "result",
]


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for n in range(files):
            sentences = [" ".join(rng.choices(WORDS, k=12)).capitalize() + "." for _ in range(220)]
            (inputs / f"doc{n}.md").write_text(f"# Document {n}\n\n" + " ".join(sentences))
        env = {"VAR_DIR": f"{tmp}/var", "INPUT_DIRS": str(inputs), "REDIS_URL": "redis://127.0.0.1:1/0",
               "APP_ENV": "test", "LOG_LEVEL": "WARNING"}  # fmt: skip
        app = create_app(env)
        paths = [f"doc{n}.md" for n in range(files)]
        with app.app_context():
            Base.metadata.create_all(runtime().engine)
            started, cpu = time.perf_counter(), time.process_time()
            result = file_ingestion(paths)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            chunks = sum(d["chunks"] for d in result["documents"])
            print(f"{files} files, {chunks} chunks, {result['embedder']}")
            print(f"first ingestion: {elapsed:.2f} s wall ({chunks / elapsed:,.0f} chunks/s), "
                  f"{cpu:.2f} s CPU ({chunks / cpu:,.0f} chunks/s)")  # fmt: skip
            started = time.perf_counter()
            again = file_ingestion(paths)
            assert all(d["unchanged"] for d in again["documents"])
            print(f"re-ingesting the unchanged files: {time.perf_counter() - started:.2f} s (no-op)")


if __name__ == "__main__":
    main()
