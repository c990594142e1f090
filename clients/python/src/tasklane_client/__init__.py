"""tasklane-client: call a Tasklane service from another one, over its HTTP API, the Celery way.

    from tasklane_client import Tasklane

    tl = Tasklane("http://127.0.0.1:5000", token)
    tl.task("add").delay(2, 3).get(timeout=30)                     # 5
    tl.chain(tl.task("add").s(2, 2), tl.task("add").s(4)).apply_async().get(timeout=30)   # 8

``AsyncTasklane`` is the same with ``await``; ``Client`` / ``AsyncClient`` make one API call each.
"""

from tasklane_client.aio import AioResult, AioWorkflowResult, AsyncClient, AsyncTasklane
from tasklane_client.canvas import Signature, Task, chain, chord, group
from tasklane_client.client import Client
from tasklane_client.errors import (
    InvalidArguments,
    TaskError,
    TasklaneError,
    TasklaneTimeout,
    TaskRevokedError,
)
from tasklane_client.tasklane import AsyncResult, Tasklane, WorkflowResult

__version__ = "0.1.0"

__all__ = [
    "AioResult",
    "AioWorkflowResult",
    "AsyncClient",
    "AsyncResult",
    "AsyncTasklane",
    "Client",
    "InvalidArguments",
    "Signature",
    "Task",
    "TaskError",
    "TaskRevokedError",
    "Tasklane",
    "TasklaneError",
    "TasklaneTimeout",
    "WorkflowResult",
    "chain",
    "chord",
    "group",
]
