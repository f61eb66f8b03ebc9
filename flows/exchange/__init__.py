"""Venue clients: one module per exchange (``binance.py``), each building its ccxt clients.

A module here owns what the system needs to know about one venue: the ccxt
options for its spot market, and moving its URLs onto another host (the replay
exchange, a testnet).  A second exchange joins as a sibling module.  The package
itself imports nothing, so ``import flows.exchange`` does not load ccxt.
"""
