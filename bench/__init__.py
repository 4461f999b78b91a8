"""Benchmark harness (`make bench`, `python -m bench --help`): this project's runtime against the
servers a user would pick instead, on the same machine and the same model files.

Not part of the test suite. Loopback only; every load run is bounded in time and every server it
starts is stopped before the next one starts. See docs/performance.md.
"""
