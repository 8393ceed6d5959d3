"""``tandem eval device`` end to end on a tiny dataset: JSON shape, ratios, bytes, plot."""

import json
import subprocess
import sys

from llm_cloud.paramgen.config import ParamGenConfig
from pipelines.train_paramgen import train_paramgen
from pipelines.train_srm import train_srm
from srm_device.models import default_config
from srm_device.training.config import TrainConfig
from tandem.data.options import DatasetOptions, load_dataset
from tests.test_cli import ENV


def test_eval_device_cli(tmp_path, atomic_dataset):
    opts = DatasetOptions(dataset=str(atomic_dataset))
    ds = load_dataset(opts)
    small = dict(hidden_size=16, inner_size=32, max_len=10)
    train_srm(ds, opts, "sasrec", default_config("sasrec", **small), TrainConfig(epochs=3), tmp_path / "srm",
              progress=False)
    train_srm(ds, opts, "gru4rec", default_config("gru4rec", **small), TrainConfig(epochs=2), tmp_path / "cloud",
              progress=False)
    train_paramgen(tmp_path / "srm", tmp_path / "pg", ParamGenConfig(recent_k=5, rank=2, epochs=1, n_prototypes=4,
                                                                    edit_dim=2), progress=False)
    out = tmp_path / "dev.json"
    proc = subprocess.run([sys.executable, "-m", "pipelines", "eval", "device", "--srm", str(tmp_path / "srm"),
                           "--paramgen", str(tmp_path / "pg"), "--candidates", f"srm:{tmp_path / 'cloud'}",
                           "--n-candidates", "20", "--json", str(out), "--plot", str(tmp_path / "p.png")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"ndcg@10", "hr@10"} <= set(report["static"]) and report["generated"] is not None
    assert set(report["fusion"]) == {"llm", "gated", "sum", "sum2", "srm", "learned"}
    assert set(report["policies"]) == {"always", "never", "random", "lsc4rec", "intellectreq", "coverage", "selfeval"}
    for name, rows in report["policies"].items():
        assert list(rows) == ["0.05", "0.1", "0.2", "0.5", "1"]
        for ratio, row in rows.items():
            assert set(row) >= {"ndcg@10", "bytes_per_user", "request_ratio"}
            # selfeval reads the candidates' scores as log-probabilities; this source is an SRM (logits), so its
            # "mass" saturates at 1 and the policy has nothing to rank by
            if name not in ("always", "never", "random", "selfeval"):
                assert abs(row["request_ratio"] - float(ratio)) <= 0.12  # 120 users: calibration is coarse
        if name != "never":  # at ratio 1 every other policy asks for every user
            assert rows["1"]["ndcg@10"] == report["policies"]["always"]["1"]["ndcg@10"]
    assert report["policies"]["never"]["0.5"]["bytes_per_user"] == 0.0
    assert report["policies"]["always"]["0.05"]["bytes_per_user"] > 0
    assert (tmp_path / "p.png").stat().st_size > 1000

    bad = subprocess.run([sys.executable, "-m", "pipelines", "eval", "device", "--srm", str(tmp_path / "srm"),
                          "--candidates", "llm:/nowhere"], capture_output=True, text=True, env=ENV, timeout=120)
    assert bad.returncode == 2 and "generative-recommender checkpoint" in bad.stderr
    assert "Traceback" not in bad.stderr
