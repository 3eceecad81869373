"""The release product component (`component.py`) and its `dg scaffold defs` scaffolder."""
