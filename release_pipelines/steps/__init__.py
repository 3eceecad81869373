"""Release steps, one module per kind (deploy, traffic, flags, migrate, gates), like pgroll's
operations: each knows how to apply itself and how to compensate, and writes the ledger first.

Steps are plain Python over the resources' classes; the Dagster ops in `ops.py` call them and turn
their results into Dagster events. The rollback job is the plan walked backwards calling the
compensations.
"""
