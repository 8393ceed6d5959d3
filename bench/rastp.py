"""RASTP token pruning (arXiv 2511.16943) on the tiny generative recommender: training time against test NDCG@10.

Trains the tiny profile (pipelines/configs/sft_tiny.yaml) on ML-100K twice from the same seed with
``python -m llm_cloud.train.sft``, once as is and once with ``rastp: {layer: L, keep: K}``, one after the other, each
in its own process on one thread (OMP_NUM_THREADS=1); then evaluates both checkpoints with
``tandem eval llm`` (constrained beam search, leave-one-out test item). Train seconds are the trainer's own
(``train_seconds`` of the checkpoint, data preparation excluded); the CPU seconds of each training process are
reported too, as a check against other jobs sharing the machine. Target: >= 20% train time saved at <= 1% relative
NDCG@10 loss.

    OMP_NUM_THREADS=1 python bench/rastp.py [--epochs 12] [--layers 2] [--layer 1] [--keep 0.5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "pipelines" / "configs" / "sft_tiny.yaml"
TIME_TARGET, NDCG_TARGET = 20.0, -1.0  # % time saved at least, % NDCG@10 change at least


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(BASE), metavar="FILE", help="base run config (default: sft_tiny.yaml)")
    p.add_argument("--epochs", type=float, default=None, help="training epochs (default: the config's)")
    p.add_argument("--layers", type=int, default=None, help="decoder layers of the model (default: the config's)")
    p.add_argument("--layer", type=int, default=1, help="RASTP: prune before this decoder layer (default: 1)")
    p.add_argument("--keep", type=float, default=0.5, help="RASTP: fraction of tokens kept (default: 0.5)")
    p.add_argument("--n", type=int, default=100, help="beams = items generated per user in eval (default: 100)")
    p.add_argument("--eval-batch-size", type=int, default=8, help="users decoded together (default: 8)")
    p.add_argument("--steps", type=int, default=20, help="interleaved training steps timed per variant after the "
                   "runs (default: 20; 0: skip)")
    p.add_argument("--parallel", action="store_true", help="train and evaluate both variants at the same time, one "
                   "thread each (needs 2 idle cores; the fairest timing on a busy machine is still --steps)")
    p.add_argument("--work", metavar="DIR", help="folder for configs and checkpoints (default: a temporary one)")
    p.add_argument("--json", metavar="FILE", help="write the configs and numbers as JSON")
    return p.parse_args(argv)


def run_config(args: argparse.Namespace, rastp: bool, out: Path) -> dict:
    cfg = yaml.safe_load(Path(args.config).read_text())
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.layers is not None:
        cfg["model"] = {**cfg.get("model", {}), "num_layers": args.layers}
    cfg["output_dir"] = str(out)
    cfg.pop("rastp", None)
    if rastp:
        cfg["rastp"] = {"layer": args.layer, "keep": args.keep}
    return cfg


def sh(*cmd: str) -> tuple[float, float]:
    """Run one command on one thread; its wall and CPU seconds (exits on failure with its stderr tail).

    CPU seconds (user + system of the child) are less disturbed than wall seconds by other jobs on the machine.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, even with another one running
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if proc.returncode:
            err.seek(0)
            sys.exit(f"bench/rastp.py: `{' '.join(cmd)}` failed ({proc.returncode}):\n{err.read()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def train_and_eval(args: argparse.Namespace, name: str, rastp: bool, work: Path) -> dict:
    out, report = work / name, work / f"{name}_eval.json"
    cfg = run_config(args, rastp, out)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"[{name}] training ...", file=sys.stderr, flush=True)
    wall, cpu = sh("-m", "llm_cloud.train.sft", "--config", str(path), "--out", str(out))
    meta = json.loads((out / "tandem_llm.json").read_text())
    print(f"[{name}] trained in {meta['train_seconds']:.0f} s; evaluating ...", file=sys.stderr, flush=True)
    eval_wall, _ = sh("-m", "pipelines", "eval", "llm", "--checkpoint", str(out), "--json", str(report),
                   "--n", str(args.n), "--batch-size", str(args.eval_batch_size))
    metrics = json.loads(report.read_text())["metrics"]
    return {"config": cfg, "train_seconds": meta["train_seconds"], "train_process_wall_seconds": wall,
            "train_process_cpu_seconds": cpu,
            "train_loss": meta["train_loss"], "eval_seconds": eval_wall, "ndcg@10": metrics["ndcg@10"],
            "hr@10": metrics["hr@10"], "metrics": metrics}


def step_times(args: argparse.Namespace, cfg: dict, steps: int) -> dict:
    """Median seconds of one training step (forward, backward, AdamW) without and with RASTP, measured in this
    process on one thread, alternating the two on the same real ML-100K batches so that other jobs on the machine
    slow both alike (the trainer's seconds above are two runs at different times)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from llm_cloud.generative.examples import lm_examples
    from llm_cloud.generative.model import build_tiny_model
    from llm_cloud.generative.prompts import PromptFormat
    from llm_cloud.generative.rastp import rastp_pruning
    from llm_cloud.generative.tokens import SemanticIdCodec, build_tokenizer
    from llm_cloud.semantic_ids.cache import resolve_codes
    from llm_cloud.train.sft_config import SFTRunConfig
    from tandem.data.options import load_dataset
    from tandem.data.split import leave_one_out

    torch.set_num_threads(1)
    run = SFTRunConfig(**cfg)
    ds = load_dataset(run.dataset_options)
    codes, _ = resolve_codes(run.dataset_options, ds, run.sids)
    tok = build_tokenizer(codes)
    fmt = PromptFormat.codes_only(SemanticIdCodec.from_tokenizer(codes, tok))
    rows = lm_examples(leave_one_out(ds.sequences).train, fmt, run.max_items, run.window_stride)
    model = build_tiny_model(run.model, tok, fmt.max_length(run.max_items), seed=run.seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=run.learning_rate)
    rng = np.random.default_rng(run.seed)
    times: dict[str, list[float]] = {"full": [], "rastp": []}
    for i in range(steps + 1):
        pick = rng.choice(len(rows["input_ids"]), run.batch_size, replace=False)
        t = max(len(rows["input_ids"][j]) for j in pick)
        ids = torch.tensor([rows["input_ids"][j] + [tok.pad_token_id] * (t - len(rows["input_ids"][j]))
                            for j in pick])  # (b,t) right-padded, as TRL's collator
        mask = torch.tensor([[1] * len(rows["input_ids"][j]) + [0] * (t - len(rows["input_ids"][j]))
                             for j in pick])  # (b,t)
        labels = torch.tensor([rows["labels"][j] + [-100] * (t - len(rows["labels"][j])) for j in pick])  # (b,t)
        for name in (("full", "rastp") if i % 2 else ("rastp", "full")):
            start = time.perf_counter()
            if name == "rastp":
                with rastp_pruning(model, run.rastp or argparse.Namespace(layer=args.layer, keep=args.keep)):
                    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            else:
                model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
            if i:  # the first batch warms up
                times[name].append(time.perf_counter() - start)
    full, pruned = float(np.median(times["full"])), float(np.median(times["rastp"]))
    return {"steps": steps, "full_step_seconds": full, "rastp_step_seconds": pruned,
            "step_time_saved_%": 100.0 * (1 - pruned / full)}


def compare(base: dict, pruned: dict) -> dict:
    saved = 100.0 * (1 - pruned["train_seconds"] / base["train_seconds"])
    cpu_saved = 100.0 * (1 - pruned["train_process_cpu_seconds"] / base["train_process_cpu_seconds"])
    ndcg = 100.0 * (pruned["ndcg@10"] / base["ndcg@10"] - 1) if base["ndcg@10"] else float("nan")
    return {"time_saved_%": saved, "process_cpu_saved_%": cpu_saved, "ndcg@10_change_%": ndcg,
            "hr@10_change_%": 100.0 * (pruned["hr@10"] / base["hr@10"] - 1) if base["hr@10"] else float("nan"),
            "target_met": bool(saved >= TIME_TARGET and ndcg >= NDCG_TARGET)}


def print_table(base: dict, pruned: dict, cmp: dict, label: str) -> None:
    print(f"{'run':<28} {'train s':>9} {'proc CPU s':>11} {'loss':>8} {'NDCG@10':>9} {'HR@10':>8}")
    for name, r in (("full", base), (label, pruned)):
        print(f"{name:<28} {r['train_seconds']:>9.1f} {r['train_process_cpu_seconds']:>11.1f} "
              f"{r['train_loss']:>8.4f} {r['ndcg@10']:>9.4f} {r['hr@10']:>8.4f}")
    print(f"time saved {cmp['time_saved_%']:+.1f}% (process CPU {cmp['process_cpu_saved_%']:+.1f}%; "
          f"target >= {TIME_TARGET:.0f}%), NDCG@10 change "
          f"{cmp['ndcg@10_change_%']:+.2f}% (target >= {NDCG_TARGET:.0f}%), HR@10 change "
          f"{cmp['hr@10_change_%']:+.2f}%: "
          f"target {'met' if cmp['target_met'] else 'not met'}")
    if "interleaved" in cmp:
        st = cmp["interleaved"]
        print(f"interleaved training steps (median of {st['steps']}): full {st['full_step_seconds']:.3f} s, rastp "
              f"{st['rastp_step_seconds']:.3f} s: {st['step_time_saved_%']:+.1f}% step time saved")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rastp_bench_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.parallel:  # both at once, one thread each: on >= 2 idle cores they run under the same conditions
            with ThreadPoolExecutor(2) as pool:
                runs = [pool.submit(train_and_eval, args, name, flag, work)
                        for name, flag in (("full", False), ("rastp", True))]
                base, pruned = (r.result() for r in runs)
        else:
            base = train_and_eval(args, "full", False, work)
            pruned = train_and_eval(args, "rastp", True, work)
    cmp = compare(base, pruned)
    if args.steps:
        print(f"timing {args.steps} interleaved steps of each ...", file=sys.stderr, flush=True)
        cmp["interleaved"] = step_times(args, pruned["config"], args.steps)
    print_table(base, pruned, cmp, f"rastp layer {args.layer} keep {args.keep:g}")
    if args.json:
        body = {"bench": "rastp", "full": base, "rastp": pruned, "comparison": cmp,
                "target": {"time_saved_%": TIME_TARGET, "ndcg@10_change_%": NDCG_TARGET}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(body, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
