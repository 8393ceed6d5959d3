"""Real evaluation of LoRA expert merging (issue 7): two experts on two distinct tasks, merged with every method.

Base: SmolLM2-135M-Instruct (fp32, offline, ``llm_common.smollm.base_model_dir``). Tasks:

- ``rec``: ML-100K next-movie prediction in text. Prompt = the titles of the user's last ``--history`` (8) items,
  target = the next item's title. Training samples: random (user, position) pairs from the leave-one-out *train*
  sequences (``tandem.data.split.leave_one_out``); held-out: the *test* split (last item), ``--eval`` random users.
- ``math``: reasoning-gym ``gsm_symbolic`` question → "The answer is N."; training items from seed 1, held-out
  items from seed 2 (questions that also occur in training are dropped).

One LoRA expert per task (r=8, alpha=16, q/k/v/o_proj, dropout 0), AdamW lr ``--lr`` for ``--steps`` steps of
``--batch`` examples (default 40 × 8 = 320 samples per task), loss on the target tokens only; an expert whose folder
exists under ``--out-dir`` is reused. The two experts are merged with every method in ``merging.methods.METHODS``
(weights 0.5/0.5, output rank 8; ties/dare density 0.5, task_arithmetic scale 2.0 = the sum of the task vectors,
cki/caps paper defaults) through ``merging.run.run_merge``, and CKI/CAPS also with calibration data (the last
``--calib`` training examples of each expert: CKI's learned local term, CAPS's gradient×weight attribution and CKA)
and with the task-vector options ``global_term: false, rescale: true`` (see ``merging/methods/cki.py``).
Metrics on the held-out sets (default 64 each): mean per-token NLL of the target tokens
(token-weighted, ↓) for base, experts and merges; for rec also hit@1 among the target and ``--negatives`` (19) random
other titles, ranked by the summed log-likelihood of the title given the prompt. Run:

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.merge_eval [--steps 40 --eval 64] [--out-dir runs/merge_eval]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from merging.calibration import Example, mean_nll, token_nll
from merging.config import make_config
from merging.methods import METHODS
from merging.run import run_merge

PARAMS = {"ties": {"density": 0.5}, "dare_linear": {"density": 0.5}, "dare_ties": {"density": 0.5},
          "task_arithmetic": {"scale": 2.0}}  # scale 2 at weights 0.5: the plain sum of the task vectors
LORA_RULE = {"global_term": False, "rescale": True}  # CKI/CAPS options for task vectors (merging/methods/cki.py)


def rec_data(n_train: int, n_eval: int, history: int, negatives: int, seed: int):
    """(train examples, eval examples, per-eval-example candidate titles with the target first)."""
    from tandem.data.options import DatasetOptions, load_dataset
    from tandem.data.split import leave_one_out

    ds = load_dataset(DatasetOptions())
    split = leave_one_out(ds.sequences)
    title = ds.catalogue.title
    rng = random.Random(seed)

    def prompt(hist) -> str:
        return "Movies watched, in order: " + "; ".join(title(int(i)) for i in hist[-history:]) + ".\nNext movie:"

    pairs = [(u, t) for u, s in enumerate(split.train) for t in range(1, len(s))]
    train = [(prompt(split.train[u][:t]), " " + title(int(split.train[u][t]))) for u, t in rng.sample(pairs, n_train)]
    users = rng.sample(range(len(split.test.targets)), n_eval)
    test = [(prompt(split.test.histories[u]), " " + title(int(split.test.targets[u]))) for u in users]
    n_items = ds.catalogue.n_items
    cands = []
    for u in users:
        tgt = int(split.test.targets[u])
        neg = set()
        while len(neg) < negatives:
            j = rng.randint(1, n_items)
            if j != tgt and title(j) != title(tgt):
                neg.add(j)
        cands.append([" " + title(tgt)] + [" " + title(j) for j in sorted(neg)])
    return train, test, cands


def math_data(n_train: int, n_eval: int) -> tuple[list[Example], list[Example]]:
    from reasoning_gym import create_dataset

    def ex(item) -> Example:
        return f"Question: {item['question']}\nAnswer:", f" The answer is {item['answer']}."

    train = [ex(x) for x in create_dataset("gsm_symbolic", size=n_train, seed=1)]
    seen = {p for p, _ in train}
    test = [e for e in (ex(x) for x in create_dataset("gsm_symbolic", size=2 * n_eval, seed=2)) if e[0] not in seen]
    return train, test[:n_eval]


def variants(only: list[str] | None) -> list[tuple[str, str, dict, bool]]:
    """(name, method, params, calibrated): every registered method data-free with its paper defaults (``PARAMS``),
    the same with calibration data for CKI and CAPS, and CKI/CAPS with the task-vector options ``LORA_RULE``."""
    out = [(m, m, PARAMS.get(m, {}), False) for m in sorted(METHODS)] + [
        ("cki_calibrated", "cki", {}, True), ("caps_calibrated", "caps", {}, True),
        ("cki_lora", "cki", LORA_RULE, False), ("cki_lora_calibrated", "cki", LORA_RULE, True),
        ("caps_lora_calibrated", "caps", LORA_RULE, True)]
    return [v for v in out if only is None or v[0] in only]


def load_base(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def train_expert(base_dir: Path, tok, data: list[Example], out: Path, steps: int, batch: int, lr: float,
                 seed: int) -> float:
    """Train and save one LoRA expert; returns the mean loss of the last 10 steps."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load_base(base_dir), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        nll, cnt = token_nll(model, tok, data[step * batch:(step + 1) * batch])
        loss = nll.sum() / cnt.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"  {out.name} step {step + 1}/{steps} loss {loss.item():.4f}", flush=True)
    model.save_pretrained(str(out))  # safetensors
    tail = losses[-10:]
    return sum(tail) / len(tail)


@torch.no_grad()
def hit_at_1(model, tok, data: list[Example], cands: list[list[str]]) -> float:
    """Share of examples whose target (candidate 0) has the highest summed log-likelihood among its candidates.
    The prompt runs once; its KV cache is repeated for the candidates (right-padded continuations)."""
    hits = 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for (prompt, _), cs in zip(data, cands):
        pi = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, P)
        out = model(input_ids=pi, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(cs))
        toks = [tok(c, add_special_tokens=False)["input_ids"] for c in cs]
        n = max(len(t) for t in toks)
        ids = torch.tensor([t + [pad] * (n - len(t)) for t in toks])  # (c, n)
        on = torch.tensor([[1.0] * len(t) + [0.0] * (n - len(t)) for t in toks])  # (c, n)
        mask = torch.cat([torch.ones(len(cs), pi.shape[1], dtype=torch.long), on.long()], 1)  # (c, P+n)
        pos = pi.shape[1] + torch.arange(n).expand(len(cs), n)  # (c, n)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache).logits
        first = out.logits[:, -1:].expand(len(cs), 1, -1)  # (c, 1, V): predicts each candidate's first token
        lp = torch.log_softmax(torch.cat([first, logits[:, :-1]], 1), -1)  # (c, n, V)
        score = (lp.gather(2, ids.unsqueeze(2)).squeeze(2) * on).sum(1)  # (c,)
        hits += int(torch.argmax(score).item() == 0)
    return hits / len(data)


@torch.no_grad()
def forward_ms(model, tok, prompt: str, reps: int = 10) -> float:
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    model(input_ids=ids)
    t0 = time.perf_counter()
    for _ in range(reps):
        model(input_ids=ids)
    return 1000 * (time.perf_counter() - t0) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default="runs/merge_eval", help="experts, merges and report (default %(default)s)")
    p.add_argument("--json", default=None, help="report file (default OUT_DIR/report.json)")
    p.add_argument("--steps", type=int, default=40, help="training steps per expert (default %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="training batch (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default %(default)s)")
    p.add_argument("--eval", type=int, default=64, help="held-out examples per task (default %(default)s)")
    p.add_argument("--history", type=int, default=8, help="rec prompt: last N titles (default %(default)s)")
    p.add_argument("--negatives", type=int, default=19, help="rec hit@1 negatives, 0 = skip (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib", type=int, default=32,
                   help="calibration examples per expert, from its own training data (default %(default)s)")
    p.add_argument("--calib-steps", type=int, default=30, help="CKI learned local term steps (default %(default)s)")
    p.add_argument("--methods", nargs="*", default=None,
                   help="merge variants to run (default all: every method, plus cki_calibrated, caps_calibrated)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    from peft import PeftModel
    from transformers import AutoTokenizer

    from llm_common.smollm import base_model_dir

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    base_dir = base_model_dir()
    tok = AutoTokenizer.from_pretrained(base_dir)
    n_train = args.steps * args.batch
    rec_train, rec_test, cands = rec_data(n_train, args.eval, args.history, args.negatives, args.seed)
    math_train, math_test = math_data(n_train, args.eval)
    times["data"] = time.perf_counter() - t
    sizes = {"train_per_task": n_train, "steps": args.steps, "batch": args.batch, "eval_rec": len(rec_test),
             "eval_math": len(math_test), "negatives": args.negatives,
             "max_prompt_tokens": {k: max(len(tok(e[0])["input_ids"]) for e in d) for k, d in
                                   (("rec", rec_train + rec_test), ("math", math_train + math_test))}}
    print("sizes:", json.dumps(sizes), flush=True)

    experts = {"rec": out / "expert_rec", "math": out / "expert_math"}
    final_loss = {}
    for name, data in (("rec", rec_train), ("math", math_train)):
        t = time.perf_counter()
        if experts[name].is_dir():
            print(f"expert {name}: reusing {experts[name]}")
        else:
            final_loss[name] = train_expert(base_dir, tok, data, experts[name], args.steps, args.batch, args.lr,
                                            args.seed)
        times[f"train_{name}"] = time.perf_counter() - t

    calib = {}
    for name, data in (("rec", rec_train), ("math", math_train)):  # the experts' own training data, never held-out
        calib[name] = out / f"calib_{name}.jsonl"
        calib[name].write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n"
                                       for q, a in data[-args.calib:]))
    merges = {}
    t = time.perf_counter()
    for key, method, params, calibrated in variants(args.methods):
        folder = out / f"merge_{key}"
        adapters = [{"path": str(experts[n]), "weight": 0.5,
                     **({"calibration": str(calib[n])} if calibrated else {})} for n in ("rec", "math")]
        cfg = make_config({"adapters": adapters, "method": method, "parameters": params, "rank": 8,
                           "out": str(folder), "calibration_options": {"max_examples": args.calib,
                                                                       "steps": args.calib_steps}})
        t1 = time.perf_counter()
        rep = run_merge(cfg, progress=False)
        merges[key] = {"path": folder, "rank": rep["rank"], "svd_error_mean": rep["reconstruction_error"]["mean"],
                       "seconds": time.perf_counter() - t1,
                       "side_information": {k: v for k, v in rep["side_information"].items() if k != "cka"}}
        if "cka" in rep["side_information"]:
            merges[key]["cka_mean"] = rep["side_information"]["cka"]["mean"]
        print(f"merged {key} in {merges[key]['seconds']:.1f} s", flush=True)
    times["merge_all"] = time.perf_counter() - t

    model = PeftModel.from_pretrained(load_base(base_dir), str(experts["rec"]), adapter_name="expert rec")
    model.eval()
    adapters = {"expert rec": experts["rec"], "expert math": experts["math"],
                **{f"merge {m}": v["path"] for m, v in merges.items()}}
    rows: dict[str, dict] = {}
    for name in ["base", *adapters]:
        t = time.perf_counter()
        if name not in ("base", "expert rec"):
            model.load_adapter(str(adapters[name]), adapter_name=name)
        if name != "base":
            model.set_adapter(name)
        with model.disable_adapter() if name == "base" else torch.no_grad():
            row = {"rec_nll": mean_nll(model, tok, rec_test), "math_nll": mean_nll(model, tok, math_test)}
            if args.negatives:
                row["rec_hit1"] = hit_at_1(model, tok, rec_test, cands)
            if name in ("expert rec", "merge cki"):
                row["forward_ms"] = forward_ms(model, tok, rec_test[0][0])
        row["avg_nll"] = (row["rec_nll"] + row["math_nll"]) / 2
        rows[name] = row
        times[f"eval {name}"] = time.perf_counter() - t
        print(f"{name:24s} " + " ".join(f"{k}={v:.4f}" for k, v in row.items()), flush=True)

    ours = [m for m in merges if m.split("_")[0] in ("cki", "caps")]
    baselines = {m: rows[f"merge {m}"]["avg_nll"] for m in merges if m not in ours}
    best_name = min(baselines, key=baselines.get) if baselines else None
    best = baselines[best_name] if baselines else float("nan")
    for m in merges:
        rows[f"merge {m}"]["vs_best_baseline"] = rows[f"merge {m}"]["avg_nll"] - best
    target = {m: rows[f"merge {m}"]["avg_nll"] <= best for m in ours}
    hdr = f"{'model':22s} {'rec NLL↓':>9s} {'math NLL↓':>9s} {'avg↓':>7s} {'rec hit@1':>9s} {'Δavg vs best':>12s}"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for name, r in rows.items():
        delta = f"{r['vs_best_baseline']:+.4f}" if "vs_best_baseline" in r else ""
        hit = f"{r['rec_hit1']:.3f}" if "rec_hit1" in r else "-"
        print(f"{name:22s} {r['rec_nll']:9.4f} {r['math_nll']:9.4f} {r['avg_nll']:7.4f} {hit:>9s} {delta:>12s}")
    print(f"\nbest baseline merge (avg NLL): {best_name} {best:.4f}; CKI/CAPS matches or beats it: {target}")
    print(f"merged rank: {sorted({v['rank'] for v in merges.values()})} (experts' rank 8); forward ms (1 thread): "
          f"expert {rows['expert rec'].get('forward_ms', 0):.1f}, "
          f"merged cki {rows.get('merge cki', {}).get('forward_ms', 0):.1f}")
    print("times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
    report = {"sizes": sizes, "args": vars(args), "train_final_loss": final_loss, "rows": rows,
              "best_baseline_merge": best_name, "cki_caps_meet_target": target,
              "merges": {m: {k: str(v) if k == "path" else v for k, v in d.items()} for m, d in merges.items()},
              "times_s": times}
    path = Path(args.json) if args.json else out / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {path}")


if __name__ == "__main__":
    main()
