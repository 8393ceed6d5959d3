"""`tandem eval realtime` end to end on a small real dataset folder: trains on cloud parts, resumes, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.bootstrap import paired_bootstrap
from pipelines.cli.main import main
from tandem.data.options import DatasetOptions, load_dataset
from tandem.data.protocols import SplitOptions, make_split


def test_eval_realtime_reports_every_method_and_resumes(tmp_path, atomic_dataset, capsys):
    args = ["eval", "realtime", "--dataset", str(atomic_dataset), "--cut", "user-fraction", "--epochs", "2",
            "--paramgen-epochs", "1", "--threads", "1", "--work", str(tmp_path / "work"), "--negatives", "5",
            "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    split = make_split(load_dataset(DatasetOptions(dataset=str(atomic_dataset))),
                       SplitOptions(protocol="realtime", cut="user-fraction"))
    assert report["rows"]["positions"] == len(split.test.targets) == report["protocol"]["realtime_positions"]
    generated = {"duet", "persona", "duet_head", "duet_head_at_cut", "persona_head"}
    assert set(report["methods"]) == {"static", "retrain"} | generated | {f"{m}_nested" for m in generated | {"static"}}
    nested = report["cloud_models"]["nested"]
    assert nested["split"].endswith("/nest=1") and nested["duet"]["positions"] == "unfitted"
    assert report["cloud_models"]["duet"]["positions"] == "prefixes"
    retrain = report["methods"]["retrain"]
    assert retrain["device_updates"] > 0 and retrain["device_update_ms_p50"] > 0 and retrain["device_state_mb"] > 0
    for name, vs in report["vs_static"].items():
        lo, hi = vs["ci95"]
        assert lo <= vs["delta_ndcg@10"] <= hi
        delta = report["methods"][name]["by_user"]["ndcg@10"] - report["methods"]["static"]["by_user"]["ndcg@10"]
        assert vs["delta_ndcg@10"] == pytest.approx(delta, abs=1e-9)  # the interval is over users
    for m in report["methods"].values():
        assert 0 <= m["ndcg@10"] <= m["hr@10"] <= 1 and 0 <= m["auc"] <= 1
    for persona, edits in (("persona", "duet"), ("persona_head", "duet_head")):
        assert report["methods"][persona]["bytes_per_update"]["down"] < report["methods"][edits][
            "bytes_per_update"]["down"]
    duet = report["methods"]["duet"]["bytes_per_update"]
    assert duet["down"] < duet["full_layers"]  # low-rank edits are smaller than the layers they edit
    assert (tmp_path / "r.png").stat().st_size > 0
    # a rerun resumes both trained stages and reproduces the report
    assert main(args) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    for name, m in report["methods"].items():  # timings differ between runs; the measured quality does not
        assert {k: again["methods"][name][k] for k in ("ndcg@10", "hr@10", "auc", "uauc", "by_user")} == {
            k: m[k] for k in ("ndcg@10", "hr@10", "auc", "uauc", "by_user")}
    assert again["cloud_models"] == report["cloud_models"]


def test_eval_realtime_refuses_a_cut_with_no_positions(tmp_path, capsys):
    # T = the 4th of 5 times = 10: ann is all cloud, bob (all after T) is a new user the cloud cannot validate
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,timestamp\nann,a,1\nann,b,2\nann,c,3\nbob,a,10\nbob,b,11\n")
    code = main(["eval", "realtime", "--dataset", str(path), "--time-col", "timestamp", "--time-fraction", "0.6",
                 "--work", str(tmp_path / "w"), "--epochs", "1"])
    assert code == 2
    assert "no real-time positions" in capsys.readouterr().err


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(0)
    a = rng.random(2000)
    b = a + 0.05 + rng.normal(0, 0.02, size=2000)  # the true mean difference is 0.05
    boot = paired_bootstrap(a, b, resamples=1000)
    assert boot["ci"][0] < 0.05 < boot["ci"][1] and boot["excludes_zero"]
    same = paired_bootstrap(a, a + rng.normal(0, 0.02, size=2000), resamples=1000)
    assert same["ci"][0] < 0 < same["ci"][1]  # no true difference: the interval holds zero (fixed seeds)
