"""The long-running processes: workers (one module per mode), their supervisor, the scheduler and
its sweeps (scheduling, maintenance), and the local runner of the Procfile (localrun)."""
