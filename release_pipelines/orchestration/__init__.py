"""Dagster glue: definitions, jobs, sensors, schedules and the Dagster resources. Ops and sensors
are short shells over the steps and the core."""
