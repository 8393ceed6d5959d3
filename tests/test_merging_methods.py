"""Merge methods against hand-computed tensors and their definitions; CKI on two trained SASRecs."""

from __future__ import annotations

import math

import pytest
import torch

from merging.methods import METHODS, MergeContext, make_method, merge_state_dicts
from merging.methods.caps import attribution_local, compatibility_report, module_cka
from merging.methods.cki import LocalCompat, cki_splice, fit_local_compat
from merging.tensors import (
    cki_global,
    data_free_local,
    disjoint_mean,
    elect_sign,
    histogram_entropy,
    linear_cka,
    magnitude_prune,
    random_drop,
    splice,
    weighted_sum,
)

T = torch.tensor


def test_registry_and_unknown_name():
    assert {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "cki", "caps"} <= set(METHODS)
    with pytest.raises(ValueError, match=r"unknown merge method 'nope'; known methods are caps, cki, dare_linear"):
        make_method("nope")
    with pytest.raises(ValueError, match=r"ties has no parameter densty; its parameters are sparsify, density"):
        make_method("ties", densty=0.3)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 1.5"):
        make_method("dare_linear", density=1.5)


def test_linear_by_hand():
    a, b = T([1.0, 2.0]), T([3.0, 4.0])
    ctx = MergeContext()
    assert torch.allclose(make_method("linear").merge([a, b], [1.0, 3.0], ctx), T([2.5, 3.5]))
    assert torch.allclose(make_method("linear", normalize=False).merge([a, b], [1.0, 3.0], ctx), T([10.0, 14.0]))
    with pytest.raises(ValueError, match="sum to 0"):
        make_method("linear").merge([a, b], [1.0, -1.0], ctx)


def test_tensor_pieces_by_hand():
    assert torch.equal(magnitude_prune(T([1.0, -3.0, 2.0, 0.5]), 0.5), T([0.0, -3.0, 2.0, 0.0]))
    stack = T([[1.0, -2.0, 1.0], [-3.0, 1.0, -1.0]])  # (2, 3)
    assert torch.equal(elect_sign(stack), T([-1.0, -1.0, 1.0]))  # sums -2, -1, 0 (a tie elects +)
    stack = T([[1.0, -2.0, 0.0], [-3.0, 4.0, 0.0], [-1.0, -4.0, 0.0]])  # (3, 3)
    signs = T([-1.0, -1.0, 1.0])
    assert torch.allclose(disjoint_mean(stack, signs), T([-2.0, -3.0, 0.0]))
    assert torch.allclose(disjoint_mean(stack, signs, [1.0, 1.0, 3.0]), T([-1.5, -3.5, 0.0]))
    assert torch.allclose(weighted_sum(stack, [1.0, 0.0, 2.0]), T([-1.0, -10.0, 0.0]))
    assert histogram_entropy(torch.ones(5)) == 0.0
    assert histogram_entropy(torch.arange(10.0)) == pytest.approx(math.log(10))


def test_ties_matches_its_definition_and_base_vs_deltas_agree():
    base = T([10.0, 20.0, 30.0, 40.0])
    t1, t2 = T([4.0, -1.0, 2.0, -3.0]), T([-2.0, 3.0, 1.0, -5.0])
    # trim to top-50%: [4, 0, 0, -3] and [0, 3, 0, -5]; signs +, +, (0 -> +), -; disjoint means 4, 3, 0, -4
    ties = make_method("ties", density=0.5)
    merged = ties.merge([base + t1, base + t2], [1.0, 1.0], MergeContext(base=base))
    assert torch.allclose(merged, base + T([4.0, 3.0, 0.0, -4.0]))
    on_deltas = ties.merge([t1, t2], [1.0, 1.0], MergeContext())
    assert torch.allclose(on_deltas + base, merged)
    ta = make_method("task_arithmetic", scale=0.5)
    full = ta.merge([base + t1, base + t2], [1.0, 2.0], MergeContext(base=base))
    assert torch.allclose(full, base + 0.5 * (t1 + 2 * t2))
    assert torch.allclose(ta.merge([t1, t2], [1.0, 2.0], MergeContext()) + base, full)


def test_dare_matches_its_definition():
    t = torch.linspace(-2.0, 2.0, 40)  # (40,)
    out = make_method("dare_linear", density=0.25, seed=3).merge([t], [1.0], MergeContext(name="w"))
    kept = out != 0
    assert torch.allclose(out[kept], t[kept] / 0.25)  # kept entries are rescaled by 1/density, the rest dropped
    assert 0 < int(kept.sum()) < 40
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    ctx = MergeContext(name="w")
    assert torch.allclose(make_method("dare_linear", density=1.0).merge([a, b], [0.3, 0.7], ctx), 0.3 * a + 0.7 * b)
    assert torch.allclose(make_method("dare_ties", density=1.0).merge([a, b], [1.0, 1.0], ctx),
                          make_method("ties", density=1.0).merge([a, b], [1.0, 1.0], ctx))
    # same seed and name: reproducible; another name: another mask
    m = make_method("dare_ties", density=0.5, seed=1)
    assert torch.equal(m.merge([a, b], [1.0, 1.0], ctx), m.merge([a, b], [1.0, 1.0], ctx))
    assert not torch.equal(m.merge([a, b], [1.0, 1.0], ctx), m.merge([a, b], [1.0, 1.0], MergeContext(name="v")))


def test_dare_rescale_keeps_the_expectation():
    t = torch.linspace(-2.0, 2.0, 20)  # (20,)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    mean = torch.stack([random_drop(t, 0.3, gen) for _ in range(n)]).mean(dim=0)  # (20,)
    # per-element std of the mean is |t|·sqrt((1-p)/p/n) <= 2·0.024 = 0.048; 0.2 is > 4 sigma
    assert torch.allclose(mean, t, atol=0.2)
    unscaled = torch.stack([random_drop(t, 0.3, gen, rescale=False) for _ in range(n)]).mean(dim=0)
    assert torch.allclose(unscaled, 0.3 * t, atol=0.1)


def test_cki_global_and_splice_by_hand():
    assert cki_global(1.3, 1.3) == 0.5
    assert cki_global(2.0, 0.0) == pytest.approx(0.7, abs=1e-3)  # the formula saturates at 0.5 ± 0.2
    assert cki_global(0.0, 2.0) == pytest.approx(0.3, abs=1e-3)
    assert 0.5 < cki_global(0.001, 0.0) < 0.7
    out = splice(T([1.0, 2.0]), T([3.0, -2.0]), 0.6, T([1.0, 0.5]))  # w = [1.0, 0.7]
    assert torch.allclose(out, T([1.0, 0.8]))


def test_cki_two_models_by_hand():
    ti, tj = T([2.0, 0.0, 1.0, -1.0]), T([0.0, 2.0, -1.0, 1.0])  # the same values: equal entropy, w_glob = 0.5
    # |ti - tj| = 2 everywhere, so s = 2 and w_loc = sigmoid(4 * (|ti| - |tj|) / 2) = sigmoid([4, -4, 0, 0])
    s4 = 1 / (1 + math.exp(-4))
    w = T([0.5 * s4 + 0.5, 0.5 * (1 - s4) + 0.5, 0.75, 0.75])
    expected = w * ti + (1 - w) * tj
    assert torch.allclose(make_method("cki").merge([ti, tj], [0.5, 0.5], MergeContext()), expected)
    # the heavier model is i
    assert torch.allclose(make_method("cki").merge([tj, ti], [0.4, 0.6], MergeContext()), expected)


def test_splice_rescale_and_cki_task_vector_options_by_hand():
    # w = [1.0, 0.7, 0.5]; rescaled by max(w, 1 - w) = [1.0, 0.7, 0.5]
    ti, tj = T([1.0, 2.0, 4.0]), T([3.0, -2.0, 2.0])
    out = splice(ti, tj, 1.0, T([1.0, 0.7, 0.5]), rescale=True)
    assert torch.allclose(out, T([1.0, (1.4 - 0.6) / 0.7, 6.0]))  # winner whole, loser at w_j / w_i; ½: the sum
    # global_term False: w = w_loc; the entropy gap no longer decides (these two have different spreads)
    a, b = torch.randn(64) * 3, torch.randn(64)
    cki = make_method("cki", global_term=False, rescale=True)
    w = data_free_local(a, b)
    expected = (w * a + (1 - w) * b) / torch.maximum(w, 1 - w)
    assert torch.allclose(cki.merge([a, b], [0.5, 0.5], MergeContext()), expected, atol=1e-6)
    assert not torch.allclose(make_method("cki").merge([a, b], [0.5, 0.5], MergeContext()), expected, atol=1e-3)


def test_cki_more_than_two_models_folds_heaviest_first():
    a, b, c = torch.randn(8, 4), torch.randn(8, 4) * 2, torch.randn(8, 4) * 0.5
    cki, ctx = make_method("cki"), MergeContext()
    merged = cki.merge([a, b, c], [0.2, 0.5, 0.3], ctx)
    step = cki.merge([b, c], [1.0, 0.0], ctx)
    assert torch.allclose(merged, cki.merge([step, a], [1.0, 0.0], ctx))
    assert torch.allclose(merged, cki.merge([c, a, b], [0.3, 0.2, 0.5], ctx))  # order comes from the weights
    assert torch.equal(cki.merge([a, a, a], [1.0, 1.0, 1.0], ctx), a)


def test_learned_local_compat_reduces_its_calibration_loss():
    torch.manual_seed(0)
    ti, tj = torch.randn(32, 16), torch.randn(32, 16)
    target = torch.where(ti.abs() < tj.abs(), ti, tj)  # the calibration data prefers the smaller entry

    def loss_fn(spliced: list[torch.Tensor]) -> torch.Tensor:
        return (spliced[0] - target).pow(2).mean()

    with torch.no_grad():
        before = float(loss_fn([cki_splice(ti, tj, LocalCompat())]))
    compat = fit_local_compat(loss_fn, [(ti, tj)], steps=60, lr=0.1)
    with torch.no_grad():
        after = float(loss_fn([cki_splice(ti, tj, compat)]))
    assert after < 0.7 * before, (before, after)
    assert not ti.requires_grad and not tj.requires_grad
    via_ctx = make_method("cki").merge([ti, tj], [1.0, 1.0], MergeContext(extra={"local_compat": compat}))
    assert float((via_ctx - target).pow(2).mean()) == pytest.approx(after, rel=1e-5)
    assert torch.allclose(LocalCompat()(ti, tj), data_free_local(ti, tj))


def test_caps_follows_attribution_and_the_cka_rule():
    ti, tj = torch.randn(6, 4), torch.randn(6, 4)
    favour_i = torch.zeros(6, 4)
    favour_i[:3] = 1.0  # rows 0-2: only model i is important; rows 3-5: only model j
    attr = [favour_i, 1.0 - favour_i]
    caps = make_method("caps")
    out = caps.merge([ti, tj], [1.0, 1.0], MergeContext(attribution=attr))
    assert torch.allclose(out[:3], ti[:3])  # w_loc = 1 -> w = 1 whatever w_glob is
    only_local = make_method("caps", global_term=False).merge([ti, tj], [1.0, 1.0], MergeContext(attribution=attr))
    assert torch.allclose(only_local, torch.where(favour_i.bool(), ti, tj))
    # normalised by their means (2/3 each): [3, 0, 0] vs [1.5, 1.5, 0]
    assert torch.allclose(attribution_local(T([2.0, 0.0, 0.0]), T([1.0, 1.0, 0.0])), T([2 / 3, 0.0, 0.5]))
    strict = make_method("caps", cka_threshold=0.8)
    averaged = strict.merge([ti, tj], [1.0, 3.0], MergeContext(attribution=attr, extra={"cka": 0.3}))
    assert torch.allclose(averaged, 0.25 * ti + 0.75 * tj)
    spliced = strict.merge([ti, tj], [1.0, 1.0], MergeContext(attribution=attr, extra={"cka": 0.9}))
    assert torch.allclose(spliced, out)
    # three experts fold heaviest first: each row block is owned by one expert, and the merge takes it from that one
    tk = torch.randn(6, 4)
    owner = [torch.zeros(6, 4) for _ in range(3)]
    for k in range(3):
        owner[k][2 * k:2 * k + 2] = 1.0
    three = make_method("caps", global_term=False).merge([ti, tj, tk], [0.2, 0.5, 0.3], MergeContext(attribution=owner))
    assert torch.allclose(three, torch.cat([ti[:2], tj[2:4], tk[4:]]))
    with pytest.raises(ValueError, match="caps needs ctx.attribution"):
        caps.merge([ti, tj], [1.0, 1.0], MergeContext(name="q_proj"))


def test_linear_cka_and_compatibility_report():
    torch.manual_seed(0)
    x = torch.randn(64, 8)  # (n, d)
    q, _ = torch.linalg.qr(torch.randn(8, 8))  # (d, d) orthogonal
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-9)
    y = torch.randn(64, 5)
    assert linear_cka(x, y) < 0.5
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    report = compatibility_report({"a": {"m": x, "k": x}, "b": {"m": x @ q, "k": y}, "c": {"m": 2 * x}})
    assert set(report) == {"m"}  # only modules every model has
    assert set(report["m"]) == {"a|b", "a|c", "b|c"}
    assert module_cka(report, "m") == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="same n"):
        linear_cka(x, y[:10])


def test_merge_state_dicts_checks_and_non_float():
    a = {"w": torch.ones(2, 2), "step": torch.tensor(3)}
    b = {"w": 3 * torch.ones(2, 2), "step": torch.tensor(7)}
    out = merge_state_dicts(make_method("linear"), [a, b])
    assert torch.allclose(out["w"], 2 * torch.ones(2, 2)) and int(out["step"]) == 3
    with pytest.raises(ValueError, match=r"key 'w': shape \(2, 2\) in model 0, \(2, 3\) in model 1"):
        merge_state_dicts(make_method("linear"), [a, {**b, "w": torch.ones(2, 3)}])
    with pytest.raises(ValueError, match=r"key 'extra': model 1 has it, model 0 does not"):
        merge_state_dicts(make_method("linear"), [a, {**b, "extra": torch.ones(1)}])
    with_base = merge_state_dicts(make_method("task_arithmetic"), [a, b], [1.0, 1.0], base={k: v * 0 for k, v in
                                                                                             a.items()})
    assert torch.allclose(with_base["w"], 4 * torch.ones(2, 2))


def test_cki_merges_two_trained_sasrecs(tmp_path, atomic_dataset):
    from eval.srm import make_validator
    from pipelines.train_srm import train_srm
    from srm_device.models import default_config
    from srm_device.training.checkpoint import load_checkpoint
    from srm_device.training.config import TrainConfig
    from tandem.data.options import DatasetOptions, load_dataset
    from tandem.data.split import leave_one_out

    opts = DatasetOptions(dataset=str(atomic_dataset))
    ds = load_dataset(opts)
    mcfg = default_config("sasrec", hidden_size=32, inner_size=64, max_len=10, dropout=0.1)
    for seed in (1, 2):
        train_srm(ds, opts, "sasrec", mcfg, TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=seed, window_stride=5),
                  tmp_path / f"m{seed}", progress=False)
    parents = [load_checkpoint(tmp_path / f"m{seed}")[0] for seed in (1, 2)]
    validate = make_validator(leave_one_out(ds.sequences), mcfg.max_len)
    parent_ndcg = [validate(m)["ndcg@10"] for m in parents]

    merged_sd = merge_state_dicts(make_method("cki"), [m.state_dict() for m in parents], [0.5, 0.5])
    child = load_checkpoint(tmp_path / "m1")[0]
    child.load_state_dict(merged_sd, strict=True)
    child.eval()
    with torch.no_grad():
        scores = child.full_sort_scores(torch.tensor([[1, 2, 3, 0]]), torch.tensor([3]))  # (1, n_items + 1)
    assert torch.isfinite(scores[:, 1:]).all()
    ndcg = validate(child)["ndcg@10"]
    assert ndcg >= 0.5 * min(parent_ndcg), (ndcg, parent_ndcg)

    # learned local compatibility: the training loss of the spliced SASRec on 256 calibration windows
    from srm_device.training.windows import make_windows

    inputs, targets = make_windows(leave_one_out(ds.sequences).train, mcfg.max_len, 5)
    x, y = torch.from_numpy(inputs[:256]), torch.from_numpy(targets[:256])  # (256, L), (256, L)
    sds = [m.state_dict() for m in parents]
    keys = [k for k in sds[0] if sds[0][k].is_floating_point()]

    class Loss(torch.nn.Module):  # functional_call runs forward: make it the training loss
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, seq: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
            return self.m.calculate_loss(seq, tgt)

    wrapped = Loss(child)

    def loss_fn(spliced: list[torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(wrapped, {f"m.{k}": v for k, v in zip(keys, spliced)}, (x, y))

    with torch.no_grad():
        before = float(loss_fn([cki_splice(sds[0][k], sds[1][k], LocalCompat()) for k in keys]))
    compat = fit_local_compat(loss_fn, [(sds[0][k], sds[1][k]) for k in keys], steps=20, lr=0.05)
    with torch.no_grad():
        after = float(loss_fn([cki_splice(sds[0][k], sds[1][k], compat) for k in keys]))
    assert after < before, (before, after)
    child.load_state_dict(merge_state_dicts(make_method("cki"), sds, [0.5, 0.5], extra={"local_compat": compat}))
    assert validate(child)["ndcg@10"] >= 0.5 * min(parent_ndcg)
