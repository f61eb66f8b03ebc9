"""Monitoring: Prometheus metrics, logging setup, notifiers and the dashboard."""
