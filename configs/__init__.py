"""Experiment configs: one `get_config(arg)` per file, the command in its docstring."""
