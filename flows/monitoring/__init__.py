"""Monitoring: Prometheus metrics of the flow (:mod:`flows.monitoring.metrics`), their settings and hooks."""
