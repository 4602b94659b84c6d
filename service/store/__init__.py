"""Storage and read models: the engine and sessions (SQLite or PostgreSQL), the ORM rows and the job state
machine they obey, the Alembic migrations, and the reads the API serves (job lists, metric series, key
parameters, downsampling)."""
