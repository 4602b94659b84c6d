"""The control plane: REST API, database, scheduler and web UI over a Ray cluster."""
