"""Operating the system: alerts and notifiers, metrics, logging, the dashboard."""
