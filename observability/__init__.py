"""Observability content of insurance-serving that does not need the runtime.

- ``observability.contract``: the metric names and labels the runtime exports (and the
  MLServer built-in metrics the dashboards and alerts use).
- ``observability.dashboards``: the Grafana dashboard generator
  (``python -m observability.dashboards``) and ``panel_queries()`` for tests that run
  every panel query against a real Prometheus.

The alert rules live in ``helm/insurance-serving/files/rules/`` and their promtool unit
tests in ``observability/tests/``.
"""
