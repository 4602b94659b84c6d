"""The scheduling core: requests turned into queued rows (sweeps expanded into cells), the default
allocation, admission and reconciliation against Ray, attempts launched and ended along the job state
machine, retries, cancel, and the lease that lets exactly one API process run the scheduler loop."""
