"""Foundation: what every layer stands on and that knows nothing of jobs running.

Settings (config, defaults), Redis key names (keys), job metadata names (meta), time (timeutil,
clock), the database (db, models), the per-process runtime (runtime: settings and the Redis
connection), the embedded Redis of local runs, riding out Redis outages (outages), Lua script
loading (lua), process helpers (proc), Celery-style signals (signals) and the running task's
context (context). Nothing here imports any other package of app.
"""
