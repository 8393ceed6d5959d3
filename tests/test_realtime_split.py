"""The real-time protocol: cut rules, test rows, and that no real-time item reaches a training set."""

from __future__ import annotations

import numpy as np
import pytest

from tandem.data.options import DatasetOptions, load_dataset
from tandem.data.protocols import SplitOptions, make_split, split_from_dict
from tandem.data.realtime import realtime_split
from tests.conftest import write_atomic


def _seqs(*lengths: int) -> list[np.ndarray]:
    return [np.arange(1, n + 1, dtype=np.int64) + 100 * u for u, n in enumerate(lengths)]


def test_user_fraction_cuts_the_last_rho_with_at_least_two_items():
    seqs = _seqs(10, 4, 3)
    split = realtime_split(seqs, [np.arange(len(s), dtype=float) for s in seqs], "user-fraction", rho=0.3)
    # 10 items: ceil(3.0) = 3 real-time, cut 7; 4 items: max(2, ceil(1.2)) = 2, cut 2; 3 items: cut 1 < 2, left out
    assert split.cloud_users.tolist() == [0, 1] and split.cut.tolist() == [7, 2]
    assert split.train[0].tolist() == seqs[0][:6].tolist() and split.valid.targets.tolist() == [seqs[0][6], seqs[1][1]]
    assert split.test.users.tolist() == [0, 0, 0, 1, 1]
    assert split.test.targets.tolist() == [8, 9, 10, 103, 104]
    assert [len(h) for h in split.test.histories] == [7, 8, 9, 2, 3]  # cloud part plus the real-time items before
    assert split.info["left_out_users"] == 1 and split.info["realtime_positions"] == 5


def test_global_time_cuts_at_one_time_for_everyone():
    seqs = _seqs(4, 3, 3)
    times = [np.array([1.0, 2, 8, 9]), np.array([1.0, 2, 3]), np.array([1.0, 7, 8])]
    # 10 interactions; time_fraction 0.6 -> T = 6th smallest time = 7; the cloud part is what is strictly before T
    split = realtime_split(seqs, times, "global-time", time_fraction=0.6)
    assert split.info["cut_time"] == 7.0
    assert split.cloud_users.tolist() == [0, 1]  # user 2 has one interaction before T: the cloud cannot validate it
    assert split.cut.tolist() == [2, 3]
    assert split.test.users.tolist() == [0, 0]  # user 1 has nothing after T: it trains but gives no test row
    assert split.test.targets.tolist() == [3, 4]


def test_bad_options_are_refused():
    for opts in (SplitOptions(protocol="realtime", rho=1.0), SplitOptions(protocol="realtime", time_fraction=0),
                 SplitOptions(protocol="realtime", min_realtime=0)):
        with pytest.raises(ValueError, match="must be"):
            opts.validate()
    assert split_from_dict(None).protocol == "loo"  # checkpoints from before the real-time protocol


def _staggered(tmp_path, cyclic):
    """The cyclic users with start times spread out, so a global cut falls at different positions per user."""
    path = write_atomic(tmp_path / "stag", cyclic)
    inter = path / "stag.inter"
    lines = inter.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        user, item, rating, ts = line.split("\t")
        out.append(f"{user}\t{item}\t{rating}\t{float(ts) + 0.1 * int(user)}")
    inter.write_text("\n".join(out) + "\n")
    opts = DatasetOptions(dataset=str(path))
    return load_dataset(opts), opts


def _assert_cloud_only(ds, split, train: list[np.ndarray]) -> None:
    """Every training sequence is a prefix of its user's cloud part without the validation item."""
    assert len(train) == len(split.cloud_users)
    for seq, u, c in zip(train, split.cloud_users, split.cut):
        assert len(seq) <= c - 1
        assert np.array_equal(seq, ds.sequences[u][: len(seq)])


@pytest.mark.parametrize("cut", ["global-time", "user-fraction"])
def test_no_realtime_item_reaches_a_training_set(tmp_path, cyclic, monkeypatch, cut):
    import pipelines.train_paramgen as tp
    import pipelines.train_srm as ts
    from llm_cloud.paramgen.config import ParamGenConfig
    from srm_device.models import default_config
    from srm_device.training.config import TrainConfig

    ds, ds_opts = _staggered(tmp_path, cyclic)
    opts = SplitOptions(protocol="realtime", cut=cut)
    split = make_split(ds, opts)
    assert split.info["realtime_positions"] > 0 and split.info["cloud_users"] > 60
    if cut == "global-time":  # by time: training and validation strictly before T, every test row at or after it
        cut_time = split.info["cut_time"]
        for u, c in zip(split.cloud_users, split.cut):
            assert ds.times[u][: c].max() < cut_time <= ds.times[u][c:].min(initial=np.inf)
    seen: dict[str, list[np.ndarray]] = {}
    real_fit = ts.fit

    def spy_fit(model, meta, train, *args, **kwargs):
        seen["srm"] = train
        return real_fit(model, meta, train, *args, **kwargs)

    monkeypatch.setattr(ts, "fit", spy_fit)
    ts.train_srm(ds, ds_opts, "sasrec",
                 default_config("sasrec", hidden_size=16, inner_size=32, max_len=10),
                 TrainConfig(epochs=1, batch_size=64, threads=1), tmp_path / "srm", progress=False, split_opts=opts)
    _assert_cloud_only(ds, split, seen["srm"])

    class Stop(Exception):
        pass

    def spy_positions(srm, train, k, *args, **kwargs):
        seen["paramgen"] = train
        raise Stop

    monkeypatch.setattr(tp, "train_positions", spy_positions)
    with pytest.raises(Stop):
        tp.train_paramgen(tmp_path / "srm", tmp_path / "pg", ParamGenConfig(epochs=1), progress=False)
    _assert_cloud_only(ds, split, seen["paramgen"])



@pytest.mark.parametrize("cut", ["global-time", "user-fraction"])
def test_a_nested_split_lies_inside_the_outer_cloud_parts(tmp_path, cyclic, cut):
    ds, _ = _staggered(tmp_path, cyclic)
    outer = make_split(ds, SplitOptions(protocol="realtime", cut=cut))
    inner = make_split(ds, SplitOptions(protocol="realtime", cut=cut, nest=1))
    outer_cut = dict(zip(outer.cloud_users.tolist(), outer.cut.tolist()))
    assert inner.info["nest"] == 1 and inner.info["realtime_positions"] > 0
    assert set(inner.cloud_users.tolist()) <= set(outer_cut)
    for u, c in zip(inner.cloud_users, inner.cut):
        assert c < outer_cut[int(u)]  # an older cloud part
    for u, h, t in zip(inner.test.users, inner.test.histories, inner.test.targets):
        assert len(h) < outer_cut[int(u)]  # every nested real-time position is inside the outer cloud part
        assert t == ds.sequences[u][len(h)]
    if cut == "global-time":
        assert inner.info["cut_time"] < outer.info["cut_time"]
