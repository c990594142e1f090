"""The Tasklane vs Celery benchmark harness (run it with ``bench/run``; see bench/README.md)."""
