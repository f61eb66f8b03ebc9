"""Daily regime inputs, read through DailyFeed: a value dated day D is known only after D + 1 day + the lag."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.operators.regime import daily_inputs, load_daily_inputs
from flows.sources.daily import DailyFeed, FileSource

DAY = 86_400_000
D = int(pd.Timestamp("2023-03-01", tz="UTC").value // 1_000_000)


def _write(d: Path, funding: str = "funding_mean", dates: tuple[str, ...] = ("2023-02-28", "2023-03-01")) -> Path:
    d.mkdir(exist_ok=True)
    pd.DataFrame({"date": dates, funding: [0.0001, 0.0003], "funding_abs": 0.0003}).to_csv(
        d / "funding_rates.csv", index=False)
    pd.DataFrame({"date": dates, "fng": [20, 80]}).to_csv(d / "fear_greed.csv", index=False)
    return d


@pytest.mark.parametrize("lag_hours", [0.0, 9.5])
def test_a_value_is_used_only_after_its_day_and_the_publication_lag(tmp_path: Path, lag_hours: float) -> None:
    daily = load_daily_inputs(_write(tmp_path / "d"), lag_hours)
    known = D + DAY + int(lag_hours * 3_600_000)  # 2023-03-01's values
    assert daily.at(known) == {"funding": pytest.approx(1.0), "sentiment": pytest.approx(-0.3)}  # still 02-28's
    assert daily.at(known + 1) == {"funding": pytest.approx(3.0), "sentiment": pytest.approx(0.3)}
    assert daily.at(D) == {}  # 02-28 is known from 03-01 00:00 + lag: not strictly before it
    assert daily.names == ("funding", "sentiment")
    lag = pd.Timedelta(hours=lag_hours).to_pytimedelta()  # the same as a DailyFeed over the files
    feed = daily_inputs(DailyFeed(FileSource(tmp_path / "d"), {"funding": lag, "fear_greed": lag}))
    assert [daily.at(t) for t in (D, known, known + 1)] == [feed.at(t) for t in (D, known, known + 1)]


def test_missing_files_leave_their_input_out_and_bad_ones_are_named(tmp_path: Path) -> None:
    assert load_daily_inputs(None).at(D) == {}
    d = _write(tmp_path / "d")
    (d / "fear_greed.csv").unlink()
    assert load_daily_inputs(d).names == ("funding",)
    with pytest.raises(ValueError, match="funding_rates.csv: column funding_mean is missing"):
        load_daily_inputs(_write(tmp_path / "e", funding="rate"))
    with pytest.raises(ValueError, match="is not a directory"):
        load_daily_inputs(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="publication_lag_hours"):
        load_daily_inputs(d, -1.0)
