"""Benchmarks of modelsurgery: one script per question, each run as `python -m bench.NAME` from the
repository root, each writing one results file in the shared layout of `bench.common` under
bench/results/. `python -m bench.make_readme_table` renders them all into bench/results/README.md.
"""
