"""Dagster job factories built from a product's manifest: release, promote, rollback, contract.

The graphs are static (every service and database of the product, in dependency waves) so the
Dagster UI shows the waves; the versions come from run config, and ops for services a release
does not change finish at once as "unchanged".
"""
