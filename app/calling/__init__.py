"""Calling tasks from Python, the Celery way: handles, canvas, results, the HTTP client, eager mode.

Public paths kept at the top of the package for the README's Python section: ``app.tasks``
(handles), ``app.result``, ``app.canvas``, ``app.client``, ``app.eager``.
"""
