"""The embedded default environment: a local MariaDB and the BigQuery emulator.

Used by `hakobu demo` and by the test suite; never imported by the pipeline itself.
"""
