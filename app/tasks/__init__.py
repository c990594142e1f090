"""The task catalogue: importing this package registers every task, one module per domain."""

from app.tasks import platform

__all__ = ["platform"]
