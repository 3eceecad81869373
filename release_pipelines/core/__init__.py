"""The pure core: manifest models, graph, planner, state rules, judges, canary decisions, linter,
windows, approvals, records, readiness. Data in, data out; no Dagster, no database, no files, no
network (import-linter's `pure-core` contract keeps it so)."""
