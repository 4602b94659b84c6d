"""MLflow, off the scheduler's path: one run per job and a parent run per sweep, a thread that makes MLflow
agree with the database (the outbox), and a sweep's reproduction report rendered and stored there."""
