"""TacticalEnv: exact accounting, timing, holding time in bars, reward terms, no lookahead, checkers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.rl_observation import TacticalBook, tactical_observation
from training.rl.data import synthetic_market_data
from training.rl.envs import TacticalConfig, TacticalEnv

OPEN = [100.0, 101.0, 103.0, 99.0, 100.0]
CLOSE = [100.5, 102.0, 104.0, 98.0, 101.0]
FEE, SLIP = 0.001, 0.001


def _ledger() -> list[dict[str, float]]:
    """The four steps of actions (1, 1, -0.5, 0) worked out by hand, line by line."""
    rows = []
    # step 1: flat -> long 1.0 at open[1] = 101, fill 101 * 1.001
    u1 = 1000.0 / 101.0
    traded1 = u1 * 101.0 * 1.001
    cash1 = 1000.0 - traded1 - FEE * traded1
    rows.append({"eq_open": 1000.0, "traded": traded1, "fee": FEE * traded1, "cash": cash1, "units": u1,
                 "equity": cash1 + u1 * 102.0, "entry": 101.0 * 1.001, "bars_held": 1})
    # step 2: stay at 1.0: equity grew by the open, so a small sell at 103 * 0.999
    eq_open2 = cash1 + u1 * 103.0
    u2 = eq_open2 / 103.0
    traded2 = (u1 - u2) * 103.0 * 0.999
    cash2 = cash1 + traded2 - FEE * traded2
    rows.append({"eq_open": eq_open2, "traded": traded2, "fee": FEE * traded2, "cash": cash2, "units": u2,
                 "equity": cash2 + u2 * 104.0, "entry": 101.0 * 1.001, "bars_held": 2})
    # step 3: flip to -0.5 at open 99, sell at 99 * 0.999; a new position, its holding time restarts
    eq_open3 = cash2 + u2 * 99.0
    u3 = -0.5 * eq_open3 / 99.0
    traded3 = (u2 - u3) * 99.0 * 0.999
    cash3 = cash2 + traded3 - FEE * traded3
    rows.append({"eq_open": eq_open3, "traded": traded3, "fee": FEE * traded3, "cash": cash3, "units": u3,
                 "equity": cash3 + u3 * 98.0, "entry": 99.0 * 0.999, "bars_held": 1})
    # step 4: flat at open 100, buy back at 100 * 1.001
    eq_open4 = cash3 + u3 * 100.0
    traded4 = -u3 * 100.0 * 1.001
    cash4 = cash3 - traded4 - FEE * traded4
    rows.append({"eq_open": eq_open4, "traded": traded4, "fee": FEE * traded4, "cash": cash4, "units": 0.0,
                 "equity": cash4, "entry": 0.0, "bars_held": 0})
    return rows


def test_scripted_actions_give_hand_computed_equity_fees_and_rewards(handmade):
    md = handmade(OPEN, CLOSE)
    cfg = TacticalConfig(initial_equity=1000.0, fee_rate=FEE, slippage=SLIP, w_log_return=1.0, w_dsr=0.5,
                         w_drawdown=2.0, w_turnover=0.1, dsr_eta=0.1)
    env = TacticalEnv(md, config=cfg)
    env.reset(seed=0)
    prev, peak, a_m, b_m = 1000.0, 1000.0, 0.0, 0.0
    for step, (action, want) in enumerate(zip((1.0, 1.0, -0.5, 0.0), _ledger(), strict=True), start=1):
        obs, reward, terminated, truncated, info = env.step(np.array([action], np.float32))
        eq = want["equity"]
        assert info["equity"] == pytest.approx(eq, rel=1e-12)
        assert info["cash"] == pytest.approx(want["cash"], rel=1e-12, abs=1e-9)
        assert info["units"] == pytest.approx(want["units"], rel=1e-12, abs=1e-12)
        assert info["fee"] == pytest.approx(want["fee"], rel=1e-12)
        assert info["traded"] == pytest.approx(want["traded"], rel=1e-12)
        lr = math.log(eq / prev)
        peak = max(peak, eq)
        dd = 1 - eq / peak
        turnover = want["traded"] / want["eq_open"]
        var = b_m - a_m**2
        dsr = 0.0 if var <= 1e-18 else (b_m * (lr - a_m) - 0.5 * a_m * (lr * lr - b_m)) / var**1.5
        dsr = max(-10.0, min(10.0, dsr))  # dsr_clip
        a_m, b_m = a_m + 0.1 * (lr - a_m), b_m + 0.1 * (lr * lr - b_m)
        assert (info["log_return"], info["drawdown"], info["turnover"]) == pytest.approx((lr, dd, turnover), rel=1e-12)
        assert info["dsr"] == pytest.approx(dsr, rel=1e-9, abs=1e-12)
        assert reward == pytest.approx(lr + 0.5 * dsr - 2.0 * dd - 0.1 * turnover, rel=1e-9, abs=1e-12)
        # observation: features of this bar + the position state, scaled by tactical_observation only
        state = (want["units"] * CLOSE[step] / eq, want["units"] * (CLOSE[step] - want["entry"]) / eq,
                 eq / prev - 1, math.log1p(want["bars_held"]), dd)
        np.testing.assert_allclose(obs[-5:], np.array(state, np.float32), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(obs[:2], md.features[step, 0])
        assert env.book.bars_held == want["bars_held"]
        assert not terminated and truncated == (step == 4)
        prev = eq
    assert step == 4


def test_decision_trades_at_next_open_not_at_the_decision_bar(handmade):
    """Changing the close of the decision bar does not move the fill; changing the next open does."""
    base = handmade(OPEN, CLOSE)
    moved_close = handmade(OPEN, [150.0, *CLOSE[1:]])
    moved_open = handmade([100.0, 120.0, *OPEN[2:]], CLOSE)
    fees = []
    for md in (base, moved_close, moved_open):
        env = TacticalEnv(md, config=TacticalConfig(initial_equity=1000.0, fee_rate=FEE, slippage=SLIP))
        env.reset()
        fees.append(env.step(np.array([1.0], np.float32))[4]["units"])
    assert fees[0] == fees[1] == pytest.approx(1000.0 / 101.0)
    assert fees[2] == pytest.approx(1000.0 / 120.0)


def test_holding_time_counts_bars_while_the_position_is_resized(handmade):
    md = handmade([100.0 + i for i in range(8)], [100.5 + i for i in range(8)])
    env = TacticalEnv(md, config=TacticalConfig(min_trade=0.0))
    env.reset()
    held, trades = [], 0
    for a in (0.5, 0.8, 0.3, 0.3, -0.2, 0.0, 0.4):
        info = env.step(np.array([a], np.float32))[4]
        trades += info["traded"] > 0
        held.append(env.book.bars_held)
    assert held == [1, 2, 3, 4, 1, 0, 1]
    assert trades == 7  # every step traded (the resizes too), yet holding time counts bars


def test_buy_and_hold_pays_costs_once_and_follows_the_price():
    md = synthetic_market_data(8, 500, 1)
    env = TacticalEnv(md, config=TacticalConfig(min_trade=0.5, fee_rate=0.001, slippage=0.0005))
    env.reset()
    done, fees = False, []
    while not done:
        _, _, term, trunc, info = env.step(np.array([1.0], np.float32))
        fees.append(info["fee"])
        done = term or trunc
    units = 10_000.0 / md.open[1, 0]
    want = 10_000.0 - units * md.open[1, 0] * 1.0005 * 1.001 + units * md.close[-1, 0]
    assert info["equity"] == pytest.approx(want, rel=1e-12)
    assert fees[0] > 0 and not any(fees[1:])


def test_min_trade_skips_small_rebalances(handmade):
    md = handmade([100.0, 101.0, 102.0], [100.5, 101.5, 102.5])
    env = TacticalEnv(md, config=TacticalConfig(min_trade=0.05))
    env.reset()
    assert env.step(np.array([0.5], np.float32))[4]["traded"] > 0
    assert env.step(np.array([0.52], np.float32))[4]["traded"] == 0.0


def test_long_only_and_position_cap(handmade):
    md = handmade([100.0, 101.0, 102.0], [100.5, 101.5, 102.5])
    env = TacticalEnv(md, config=TacticalConfig(allow_short=False, max_position=0.5))
    env.reset()
    assert env.step(np.array([-1.0], np.float32))[4]["units"] == 0.0
    env.position_cap = 0.25  # what the hierarchy does with the strategic weight
    info = env.step(np.array([1.0], np.float32))[4]
    assert info["units"] * 102.0 / (info["cash"] + info["units"] * 102.0) == pytest.approx(0.25, rel=1e-3)


def test_observation_is_tactical_observation_of_the_bar_and_state():
    md = synthetic_market_data(3, 300, 2, n_features=6)
    env = TacticalEnv(md, asset=1, config=TacticalConfig(episode_bars=100), seed=5)
    obs, info = env.reset()
    rng = np.random.default_rng(0)
    prev = env.book.equity
    for _ in range(50):
        t = env.t
        px = md.close[t, 1]
        want = tactical_observation(md.features[t, 1], env.book.units * px / env.book.equity,
                                    env.book.units * (px - env.book.entry_price) / env.book.equity, env.book.equity / prev - 1.0,
                                    env.book.bars_held, 1.0 - env.book.equity / env.book.peak)
        np.testing.assert_array_equal(obs, want)
        assert obs.dtype == np.float32 and obs.shape == (6 + 5,)
        prev = env.book.equity
        obs, *_ = env.step(rng.uniform(-1, 1, 1).astype(np.float32))


def test_no_lookahead(perturb_after, agree_until):
    md = synthetic_market_data(1, 200, 1)
    actions = np.random.default_rng(2).uniform(-1, 1, (150, 1)).astype(np.float32)
    cfg = TacticalConfig(w_dsr=0.3, w_drawdown=0.5, w_turnover=0.1)
    assert agree_until(lambda m: TacticalEnv(m, config=cfg), (md, perturb_after(md, 120)), actions, 120) == 121


def test_same_seed_same_episodes():
    md = synthetic_market_data(4, 400, 1)
    cfg = TacticalConfig(episode_bars=50)

    def rollout(seed: int) -> list[float]:
        env = TacticalEnv(md, config=cfg, seed=seed)
        env.action_space.seed(seed)
        out = []
        for _ in range(3):
            _, info = env.reset()
            out.append(float(info["t"]))
            done = False
            while not done:
                _, r, term, trunc, _ = env.step(env.action_space.sample())
                out.append(r)
                done = term or trunc
        return out

    assert rollout(7) == rollout(7)
    assert rollout(7) != rollout(8)


def test_ruin_terminates(handmade):
    md = handmade([100.0, 100.0, 400.0], [100.0, 400.0, 400.0])
    env = TacticalEnv(md, config=TacticalConfig(max_position=2.0, fee_rate=0.0, slippage=0.0))
    env.reset()
    *_, terminated, truncated, info = env.step(np.array([-1.0], np.float32))  # short 2x at 100 -> 400
    assert terminated and not truncated and info["equity"] < 0


def test_passes_gymnasium_and_sb3_checkers(env_checkers):
    env_checkers(TacticalEnv(synthetic_market_data(0, 300, 1), config=TacticalConfig(episode_bars=64), seed=0))


@pytest.mark.parametrize(("field", "value"), [("fee_rate", -0.1), ("max_position", float("nan")),
                                               ("dsr_eta", 0.0), ("min_trade", 2.0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"TacticalConfig.{field}"):
        TacticalConfig(**{field: value})


def test_bad_inputs_are_refused(handmade):
    md = handmade(OPEN, CLOSE)
    with pytest.raises(ValueError, match="episode_bars"):
        TacticalEnv(md, config=TacticalConfig(episode_bars=10))
    with pytest.raises(ValueError, match="asset 3"):
        TacticalEnv(md, asset=3)
    env = TacticalEnv(md)
    env.reset()
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="start 9"):
        env.reset(options={"start": 9})


def test_a_book_on_a_return_index_sees_what_the_env_sees(handmade):
    """The live flow's way: one-bar returns only, price index from 1.0, open = last close."""
    rng = np.random.default_rng(11)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, 60)))
    md = handmade(np.concatenate([[100.0], close[:-1]]), close)  # every open is the last close
    cfg = TacticalConfig(fee_rate=0.001, slippage=0.0005, min_trade=0.01)
    env = TacticalEnv(md, config=cfg)
    env_obs = [env.reset()[0]]
    actions = rng.uniform(-1, 1, 59)
    for a in actions:
        env_obs.append(env.step(np.array([a], np.float32))[0])
    book, index, target = TacticalBook(1.0), 1.0, None
    for t in range(60):
        if t > 0:
            ret_1 = math.log(md.close[t, 0] / md.close[t - 1, 0])
            book.execute(target, index, cfg.fee_rate, cfg.slippage, cfg.min_trade)  # at the open = last close
            index *= math.exp(ret_1)
            book.mark(index)
        if t == 30:
            book = TacticalBook.restore(book.snapshot())  # a restart in the middle changes nothing
        np.testing.assert_allclose(book.observation(md.features[t, 0], index), env_obs[t], rtol=2e-5, atol=1e-6)
        target = float(actions[t]) if t < 59 else 0.0


@pytest.mark.parametrize("min_trade", [0.0, 0.05])
def test_book_step_is_execute_mark_state(min_trade: float) -> None:
    """``TacticalBook.step`` (the flow's one call per bar) leaves the book and the terms of the three calls, bit for bit."""
    rng = np.random.default_rng(5)
    one, three = TacticalBook(), TacticalBook()
    price = 100.0
    targets = rng.choice([-1.0, -0.5, 0.0, 0.0, 0.3, 1.0, 1e-13], 400) + rng.normal(0.0, 0.01, 400) * (
        rng.random(400) < 0.5)
    for target in targets:
        close = price * math.exp(rng.normal(0.0, 0.02))
        three.execute(float(target), price, FEE, SLIP, min_trade)
        three.mark(close)
        expected = three.state(close)
        got = one.step(float(target), price, close, FEE, SLIP, min_trade)
        assert repr(got) == repr(expected)
        assert repr(one.snapshot()) == repr(three.snapshot())
        price = close
