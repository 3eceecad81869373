"""Alembic environment and revisions for the release ledger's own schema (run by Ledger on open)."""
