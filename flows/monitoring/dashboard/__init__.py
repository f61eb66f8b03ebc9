"""The Streamlit dashboard: ``python -m flows.monitoring.dashboard`` (see :mod:`flows.monitoring.dashboard.__main__`)."""
