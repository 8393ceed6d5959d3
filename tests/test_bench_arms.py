"""The training benches' arm handling (bench/sft_arms.py): configs, reuse of finished arms, arm selection."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import sft_schedule, token_pruning
from bench.sft_arms import arm_config, arm_parser, same_run, selected_arms


def test_arm_config_merges_overrides_into_the_packaged_config(tmp_path: Path) -> None:
    cfg = arm_config({"model": {"num_layers": 3}, "rastp": {"layer": 1}, "epochs": 2}, tmp_path / "out")
    assert cfg["model"]["num_layers"] == 3 and cfg["model"]["hidden_size"] == 128  # merged one level deep
    assert cfg["rastp"] == {"layer": 1} and cfg["epochs"] == 2 and cfg["output_dir"] == str(tmp_path / "out")


def test_same_run_fills_in_defaults() -> None:
    assert same_run({"epochs": 5}, {"epochs": 5, "fused_loss": True, "lr_scheduler": "linear"})
    assert not same_run({"epochs": 5}, {"epochs": 5, "fused_loss": False})
    assert not same_run(None, {"epochs": 5})


def test_selected_arms_scale_epochs_and_need_the_baseline() -> None:
    arms = {"base": {}, "long": {"learning_rate": 3e-3, "epoch_factor": 1.5}}
    ap = arm_parser("doc", arms, "runs/x", epochs=4)
    got = selected_arms(ap, ap.parse_args(["--arms", "base,long"]), arms, "base")
    assert got == {"base": {"epochs": 4.0}, "long": {"learning_rate": 3e-3, "epochs": 6.0}}
    assert "epoch_factor" in arms["long"]  # the table itself is left as it is
    for bad in ("long", "base,nope"):
        with pytest.raises(SystemExit):
            selected_arms(ap, argparse.Namespace(arms=bad, epochs=4), arms, "base")


@pytest.mark.parametrize("bench", [sft_schedule, token_pruning])
def test_every_arm_is_a_valid_sft_config(bench, tmp_path: Path) -> None:
    from llm_cloud.train.sft_config import SFTRunConfig

    for name, over in bench.ARMS.items():
        over = {k: v for k, v in over.items() if k != "epoch_factor"}
        SFTRunConfig(**arm_config(over, tmp_path / name))  # raises on an unknown key or a bad value
    if bench is sft_schedule:  # the baseline states the former schedule, whatever sft_tiny.yaml now says
        assert bench.ARMS["current"] == sft_schedule.BEFORE
