"""Strategies: the decision logic between the models and the risk engine (:mod:`flows.strategies.base`)."""
