"""Tandem's SRM against RecBole 1.2.1's, trained and tested in one run on the same data and protocol.

Data: any RecBole atomic folder or built-in name (``ml-100k``, ``ml-1m``), with the same filters given to both
(``--min-rating``, ``--kcore``; RecBole's standard sequential benchmark uses ``--min-rating 3 --kcore 10``).
``--targets-only`` trains nothing: it loads the data in both tools and compares, user by user, the validation and
test targets each one holds out (they differ only where a user's last interactions share a timestamp and the two
tools order the tie differently; ``--tie-order``). On ML-1M RecBole orders by float32-rounded timestamps (64-second
steps) with file order inside a step; ``--tie-order float32`` makes Tandem order the same way. On ML-100K RecBole's
packaged dataset properties min-max scale the timestamps first; ``--tie-order float32-minmax`` matches that.

Protocol (RecBole's for sequential models): time-ordered leave-one-out, full ranking over all items,
history not masked, cross-entropy over all items, early stopping on validation NDCG@10 with the same patience and the
same epoch cap. Equal model hyperparameters: hidden 64, 2 layers, 2 heads, FFN 256, dropout 0.5, max length 50.

What differs is how training examples are fed: RecBole materialises every prefix as its own row (97,171 rows of up to
50 items), Tandem takes the loss at every position of causal windows (the same 97,171 prefix->item pairs in about 7k
windows). Both run on the same number of CPU threads, one after the other.

RecBole runs in its own venv under ``$TANDEM_HOME/bench/recbole-venv``, created on first use with:
``torch==2.13.0``, then ``recbole==1.2.1``, then ``"numpy<2" "pandas<3" "setuptools>=77.0.3,<81"`` (RecBole uses
``np.float``; ray 2.6.3 needs ``pkg_resources``). ``bench/recbole_runner.py`` sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` so RecBole can reload its checkpoint, and switches off the anomaly detection
its import turns on.

    python bench/srm_vs_recbole.py [--dataset ml-100k] [--epochs 200 --patience 10 --threads 1 --json FILE]
    python bench/srm_vs_recbole.py --dataset ml-1m --min-rating 3 --kcore 10 --targets-only --json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.srm import evaluate_checkpoint  # noqa: E402
from pipelines.train_srm import train_srm  # noqa: E402
from srm_device.models import default_config  # noqa: E402
from srm_device.training.config import TrainConfig  # noqa: E402
from tandem.data import fetch  # noqa: E402
from tandem.data.options import DatasetOptions, load_dataset  # noqa: E402
from tandem.io import atomic_write_json  # noqa: E402
from tandem.paths import tandem_home  # noqa: E402

RECBOLE_STEPS = (
    ["torch==2.13.0"],
    ["recbole==1.2.1"],
    ["numpy<2", "pandas<3", "setuptools>=77.0.3,<81"],
)
MODEL_NAMES = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}


def recbole_python() -> Path:
    """Python of RecBole's venv, creating and filling the venv on first use."""
    venv = tandem_home() / "bench" / "recbole-venv"
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import recbole"], capture_output=True).returncode == 0
    if not ok:
        print(f"creating RecBole venv in {venv} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for step in RECBOLE_STEPS:
            subprocess.run([str(py), "-m", "pip", "install", "-q", *step], check=True)
    return py


def atomic_folder(dataset: str) -> Path:
    """The atomic folder RecBole reads: a built-in name is fetched first; anything else must be such a folder."""
    if dataset in fetch.BUILTIN:
        return fetch.fetch(dataset)
    folder = Path(dataset)
    if not (folder / f"{folder.name}.inter").is_file():
        raise SystemExit(f"--dataset {dataset}: RecBole reads only atomic folders (NAME/NAME.inter); pass a built-in "
                         f"name ({', '.join(fetch.known_names())}) or such a folder")
    return folder


def options(args: argparse.Namespace) -> DatasetOptions:
    return DatasetOptions(dataset=args.dataset, min_rating=args.min_rating, kcore=args.kcore,
                          tie_order=args.tie_order)


def run_recbole(model: str, args: argparse.Namespace, targets_only: bool = False) -> dict:
    py = recbole_python()
    folder = atomic_folder(args.dataset)
    with tempfile.TemporaryDirectory(prefix="recbole-") as work:
        cmd = [str(py), str(ROOT / "bench" / "recbole_runner.py"), "--data-path", str(folder.parent),
               "--dataset", folder.name, "--model", MODEL_NAMES[model], "--epochs", str(args.epochs),
               "--stopping-step", str(args.patience), "--threads", str(args.threads), "--seed", str(args.seed),
               "--workdir", work, "--kcore", str(args.kcore)]
        if args.min_rating is not None:
            cmd += ["--min-rating", str(args.min_rating)]
        if targets_only:
            cmd.append("--targets-only")
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
        wall = time.perf_counter() - t0
    tag = "TARGETS " if targets_only else "RESULT "
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"RecBole run failed with exit code {proc.returncode}")
    out = json.loads(lines[-1][len(tag):])
    out["process_seconds"] = wall
    return out


def compare_targets(args: argparse.Namespace) -> dict:
    """Per user, do both tools hold out the same validation and test item? Disagreements are split by whether the
    user's target ties in time with its neighbour (then only the tie order differs)."""
    from tandem.data.split import leave_one_out

    ds = load_dataset(options(args))
    split = leave_one_out(ds.sequences)
    rb = run_recbole(args.model, args, targets_only=True)
    out = {"dataset": args.dataset, "min_rating": args.min_rating, "kcore": args.kcore, "tie_order": args.tie_order,
           "users": {"tandem": ds.n_users, "recbole": len(rb["test"])}, "items": ds.n_items,
           "interactions": ds.n_interactions, "recbole_train_rows": rb["train_rows"],
           "tandem_train_pairs": int(sum(len(s) - 1 for s in split.train))}
    for name, case, offset in (("test", split.test, 1), ("valid", split.valid, 2)):
        same = tied = differ = missing = 0
        for u, target in zip(case.users, case.targets):
            raw_user, raw_item = ds.user_raw_ids[u], str(ds.catalogue.raw_ids[target])
            theirs = rb[name].get(raw_user)
            if theirs is None:
                missing += 1
            elif theirs == raw_item:
                same += 1
            else:
                differ += 1
                t = ds.times[u]
                tied += bool(t[len(t) - offset] == t[len(t) - offset - 1])
        n = max(1, len(case.targets))
        out[name] = {"same": same / n, "differ": differ / n, "differ_and_tied": tied / n, "missing_in_recbole": missing}
    return out


def run_tandem(model: str, args: argparse.Namespace) -> dict:
    opts = options(args)
    ds = load_dataset(opts)
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, threads=args.threads, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="tandem-") as out:
        t0 = time.perf_counter()
        result = train_srm(ds, opts, model, default_config(model, ffn_dropout=args.ffn_dropout), cfg, out,
                           overwrite=True)
        train_s = time.perf_counter() - t0
        report = evaluate_checkpoint(out, "test")
    return {"model": model, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_seconds": train_s, "valid_ndcg@10": result.best_valid["ndcg@10"], "metrics": report.metrics}


def table(t: dict, r: dict) -> str:
    rows = [("test ndcg@10", "ndcg@10"), ("test hr@10", "hr@10"), ("test mrr@10", "mrr@10"),
            ("test ndcg@20", "ndcg@20")]
    lines = [f"{'':<22}{'tandem':>12}{'recbole':>12}{'tandem/recbole':>16}"]
    for label, key in rows:
        a, b = t["metrics"][key], r["metrics"][key]
        lines.append(f"{label:<22}{a:>12.4f}{b:>12.4f}{a / b if b else float('nan'):>16.3f}")
    a, b = t["train_seconds"], r["train_seconds"]
    lines.append(f"{'train wall time (s)':<22}{a:>12.1f}{b:>12.1f}{a / b:>16.3f}")
    lines.append(f"{'epochs run (best)':<22}{t['epochs_run']:>8} ({t['best_epoch']:>2}){r['epochs_run']!s:>8} "
                 f"({r['best_epoch']!s:>2})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k", help="built-in name or RecBole atomic folder (default: ml-100k)")
    ap.add_argument("--min-rating", type=float, help="keep interactions with rating >= this, in both tools")
    ap.add_argument("--kcore", type=int, default=0, help="k-core filter for both tools (default: 0, none)")
    ap.add_argument("--tie-order", choices=("file", "item", "float32", "float32-minmax"), default="file",
                    help="Tandem's order of same-timestamp interactions; float32 orders as RecBole does on ML-1M, "
                    "float32-minmax as on ML-100K (default: file)")
    ap.add_argument("--targets-only", action="store_true", help="compare the held-out targets of both tools, per "
                    "user, and train nothing")
    ap.add_argument("--model", choices=sorted(MODEL_NAMES), default="sasrec")
    ap.add_argument("--ffn-dropout", type=float, help="Tandem SASRec's dropout between the feed-forward layers "
                    "(0 = RecBole's layer; default: --dropout as in `tandem train srm`)")
    ap.add_argument("--epochs", type=int, default=200, help="epoch cap for both (default: 200)")
    ap.add_argument("--patience", type=int, default=10, help="early-stopping patience for both (default: 10)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for each run (default: 1)")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--json", help="write both results and the ratios here")
    args = ap.parse_args()
    if args.targets_only:
        report = compare_targets(args)
        print(json.dumps(report, indent=2))
        if args.json:
            atomic_write_json(args.json, {**report, "args": vars(args)})
        return

    print(f"[1/2] Tandem {args.model} …", file=sys.stderr)
    t = run_tandem(args.model, args)
    print(f"      test ndcg@10 {t['metrics']['ndcg@10']:.4f} in {t['train_seconds']:.0f}s", file=sys.stderr)
    print(f"[2/2] RecBole {MODEL_NAMES[args.model]} …", file=sys.stderr)
    r = run_recbole(args.model, args)
    print(f"\n{args.model} on {args.dataset} (min rating {args.min_rating}, {args.kcore}-core), full ranking, "
          f"{args.threads} thread(s), epoch cap {args.epochs}, "
          f"patience {args.patience}")
    print(table(t, r))
    if args.json:
        ratios = {"ndcg@10": t["metrics"]["ndcg@10"] / r["metrics"]["ndcg@10"],
                  "train_seconds": t["train_seconds"] / r["train_seconds"]}
        atomic_write_json(args.json, {"tandem": t, "recbole": r, "ratios": ratios, "args": vars(args)})


if __name__ == "__main__":
    main()
