"""``python -m bench.harness [options]``, from the project root: what ``bench/run`` runs."""

from bench.harness.cli import main

raise SystemExit(main())
