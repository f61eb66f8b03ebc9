"""A local server replaying the daily providers' HTTP APIs (Fear & Greed, chain statistics).

``python -m infra.replay_providers --data ../shared/data/daily-onchain-sentiment --port 9100``
serves alternative.me's ``/fng/`` and blockchain.info's ``/charts/<name>`` in their real
formats from the daily CSV files, plus the recorded error replies of ``recorded/``, so the
production clients (``flows.sources.daily.HttpSource``) are tested unchanged.  Like the
replay exchange it imports nothing from ``flows/``.
"""

from infra.replay_providers.server import ProviderReplay, running_providers

__all__ = ["ProviderReplay", "running_providers"]
