"""Risk: signal combination, position sizing, limits, circuit breakers and the kill switch."""
