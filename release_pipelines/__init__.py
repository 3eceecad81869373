"""Multi-step software releases across services and databases, run as Dagster jobs."""

__version__ = "0.1.0"
