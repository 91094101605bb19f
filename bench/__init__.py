"""Benchmarks and simulations; run each module as a script (see its docstring)."""
