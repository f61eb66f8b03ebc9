"""Training logs: the neural models always write TensorBoard event files with their per-epoch losses."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.kit.lstm_data import CFG, FEATS, synth
from training.models.lstm import LstmClassifier, LstmConfig
from training.models.torch_common import MetricLog


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_lstm_training_writes_an_event_file_with_every_epoch(tmp_path: Path) -> None:
    log_dir = tmp_path / "lstm" / "fold-0"
    model = LstmClassifier(FEATS, LstmConfig(**{**asdict(CFG), "log_dir": str(log_dir)})).fit(synth(120))
    assert list(log_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert not list(log_dir.glob("*.csv"))
    logged = _scalars(log_dir)
    epochs = [h["epoch"] for h in model.history]
    assert [s for s, _ in logged["loss/val"]] == epochs
    for (_, v), h in zip(logged["loss/train"], model.history, strict=True):
        assert abs(v - h["train_loss"]) <= 1e-6 * max(1.0, abs(h["train_loss"]))  # stored as float32


def test_metric_log_without_a_directory_writes_nothing(tmp_path: Path) -> None:
    log = MetricLog(None)
    log.scalar("loss/val", 1.0, 0)
    log.close()
    assert not list(tmp_path.iterdir())
