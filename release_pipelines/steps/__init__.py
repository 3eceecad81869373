"""Release steps, one module per kind (deploy, traffic, flags, migrate, gates, blue-green,
approval, complete, preflight), like pgroll's operations: each knows how to apply itself and how to
compensate, and writes the ledger first.

Steps are plain Python over the resources' clients (no Dagster: import-linter's `plain-steps`
contract); the ops in `orchestration/jobs` call them and turn their results into Dagster events.
The rollback job is the plan walked backwards calling the compensations.
"""
