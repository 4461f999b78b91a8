"""Observability content of insurance-serving (none of it imports the runtime).

- ``observability.contract``: every ``ml_*`` metric (name, type, labels, buckets, help), from
  which runtime/metrics.py builds its collectors, and the MLServer built-in metrics the
  dashboards and alerts use. Installed with the package (the runtime imports it).
- ``observability.dashboards``: the Grafana dashboard generator
  (``python -m observability.dashboards``) and ``panel_queries()`` for tests that run
  every panel query against a real Prometheus.

The alert rules live in ``helm/insurance-serving/files/rules/`` and their promtool unit
tests in ``observability/tests/``.
"""
