"""Dagster components: add releases to a `dg` project with one `defs.yaml`."""
