-- Runs once, when the PostgreSQL volume is first created: MLflow gets its own database.
CREATE DATABASE mlflow;
