"""hakobu's benchmarks: each goal of issue 4 measured as a ratio against a baseline in the same run.

`python -m bench.run_all` (what `make bench` calls) prints one `GOAL ...` line per goal and rewrites
BENCHMARKS.md. Every reader runs in its own subprocess (bench/child.py) so its peak RSS is its own.
"""
