"""Execution: order intents, the order state machine, and the paper and live brokers behind one interface."""
