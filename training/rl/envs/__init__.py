"""Gymnasium environments: tactical position sizing, strategic allocation, order execution."""

from training.rl.envs.common import NullEnv, env_steps_per_second
from training.rl.envs.execution import ExecutionConfig, ExecutionEnv
from training.rl.envs.strategic import StrategicConfig, StrategicEnv
from training.rl.envs.tactical import TacticalConfig, TacticalEnv

__all__ = ["ExecutionConfig", "ExecutionEnv", "NullEnv", "StrategicConfig", "StrategicEnv", "TacticalConfig",
           "TacticalEnv", "env_steps_per_second"]
