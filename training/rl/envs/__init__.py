"""Gymnasium environments: tactical position sizing, strategic allocation, order execution."""

from training.rl.envs.common import env_steps_per_second
from training.rl.envs.tactical import TacticalConfig, TacticalEnv

__all__ = ["TacticalConfig", "TacticalEnv", "env_steps_per_second"]
