"""The HTTP client of Tasklane's API: ``Client(base_url, token)``, from the ``tasklane-client`` package.

The client lives in ``clients/python`` (distribution ``tasklane-client``, import ``tasklane_client``),
so that other services install it without this service's code; ``app.client`` and this module
re-export its call-by-call :class:`Client` and its errors for code written against them::

    client = Client("https://tasks.example.com", token)
    job_id = client.enqueue("add", {"x": 2, "y": 3}, countdown=10)
    job = client.wait(job_id, timeout=30)       # the job's view once it has finished
"""

from tasklane_client import Client, TasklaneError, TasklaneTimeout

__all__ = ["Client", "TasklaneError", "TasklaneTimeout"]
