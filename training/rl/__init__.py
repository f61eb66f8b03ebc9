"""Reinforcement learning: market data as arrays, gymnasium environments, SB3 agents, ONNX export."""
