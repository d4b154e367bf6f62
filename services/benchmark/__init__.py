"""Benchmarks, the model lifecycle around them (blue/green activation), and drift checks.

`runner.run_benchmark` measures a candidate embedding model in its own temporary index;
`activation` switches the active embedding model; `drift` re-checks the active one;
`cli` and services/api/registry.py expose them.
"""
