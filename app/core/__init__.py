"""The core: jobs in Redis and what happens to them, whoever runs the process.

The JSON job and queue classes and the lossless dequeue (queues), Celery states (states),
the enqueue path (dispatch), workflows (workflows, steps), one attempt of a job (execution),
time and rate limits (limits), a run's lease (leases), every outcome of a run (outcomes),
job listings (listing), and every reach into RQ's internals (compat). The processes and the
surfaces above call these; the core finds tasks only through the catalogue's registry.
"""
