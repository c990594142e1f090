"""What users and operators touch: the HTTP API, the dashboard, the flask CLI, the seed command and
the catalogue table. Views are thin: they parse, call the core or the processes, and answer."""
