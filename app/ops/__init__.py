"""Ops: what an operator reads about the service: logs, metrics, Sentry and tracing, health.

It stands on the foundation and the services (the health check calls the HTTP peers); it
knows nothing of queues or workers, so every layer above may report through it.
"""
