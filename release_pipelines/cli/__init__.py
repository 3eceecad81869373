"""The `release` command line: a leaf, one module per command group (`main` is the entry point).

Nothing else in the package imports from here."""
