"""One cost model: every simulation's default fees and slippage come from flows.execution.costs."""

from __future__ import annotations

import dataclasses

from flows.execution.config import ExecutionConfig, SlippageConfig
from flows.execution.costs import COSTS, EXECUTION_HALF_SPREAD, EXECUTION_MAKER_FEE
from training.metrics import TradingConfig
from training.models.lightgbm_model import LightGBMConfig
from training.rl.envs.execution import ExecutionConfig as ExecutionEnvConfig
from training.rl.envs.strategic import StrategicConfig
from training.rl.envs.tactical import TacticalConfig
from training.rl.hierarchy import HierarchyConfig


def test_the_paper_broker_defaults_are_the_cost_model():
    ex = ExecutionConfig()
    assert (ex.maker_fee, ex.taker_fee) == (COSTS.maker_fee, COSTS.taker_fee)
    assert SlippageConfig().model_dump() == dataclasses.asdict(COSTS.paper_slippage)


def test_the_rl_environments_and_the_hierarchy_default_to_the_cost_model():
    for cfg in (TacticalConfig(), StrategicConfig(), HierarchyConfig()):
        assert (cfg.fee_rate, cfg.slippage) == (COSTS.taker_fee, COSTS.flat_slippage)
    ex = ExecutionEnvConfig()
    assert ex.taker_fee == COSTS.taker_fee
    assert (ex.maker_fee, ex.half_spread) == (EXECUTION_MAKER_FEE, EXECUTION_HALF_SPREAD)


def test_the_metrics_charge_the_taker_fee_per_unit_of_position_change():
    assert TradingConfig().fee_bps == LightGBMConfig().fee_bps == COSTS.fee_bps


def test_todays_values_are_kept():
    assert (COSTS.maker_fee, COSTS.taker_fee, COSTS.flat_slippage, COSTS.fee_bps) == (0.001, 0.001, 0.0005, 10.0)
    assert (EXECUTION_MAKER_FEE, EXECUTION_HALF_SPREAD) == (0.0002, 0.0001)
