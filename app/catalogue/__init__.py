"""The catalogue's vocabulary: how a task is declared, and what its body may call.

``registry`` holds the declarations (``@task``, input models, retry, limits, schedules, queue
names) and the registry every layer above reads; ``progress`` is the one call a task makes
to report progress. Task modules (app/tasks/) import from here and from the layers below;
they never import the core, a worker or a view.
"""
