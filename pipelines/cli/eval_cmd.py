"""``tandem eval srm|llm|device|realtime|collab|thinkrec``."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli.common import add_parser, as_user_error, checked_config, dump, write_json
from tandem.config import add_dataclass_arguments
from tandem.data.options import add_dataset_arguments, options_from_args
from tandem.data.protocols import add_split_arguments


def _eval_srm(args: argparse.Namespace) -> int:
    from eval.metrics import format_table
    from eval.srm import evaluate_checkpoint

    ds_options = options_from_args(args) if args.dataset else None
    report = evaluate_checkpoint(args.checkpoint, args.split, args.mask_history, ds_options)
    masked = "history masked" if report.mask_history else "history not masked"
    rows = f", {report.n_rows} positions" if report.n_rows != report.n_users else ""
    print(f"{report.model} on {report.dataset}, {report.protocol} {report.split} split, {report.n_users} users{rows}, "
          f"full ranking, {masked}")
    print(format_table(report.metrics))
    if rows:
        print("mean over users (each user's mean over their positions):")
        print(format_table(report.metrics_by_user))
    write_json(args.json, report.to_json())
    return 0


def _eval_llm(args: argparse.Namespace) -> int:
    from eval.llm import evaluate_llm_checkpoint
    from eval.metrics import format_table

    report = evaluate_llm_checkpoint(args.checkpoint, args.split, args.n, args.batch_size, args.backend,
                                     args.max_users)
    print(f"{report.model} on {report.dataset}, {report.split} split, {report.n_users} users, top-{args.n} by "
          f"trie-constrained beam search (not generated = miss)")
    print(format_table(report.metrics))
    write_json(args.json, report.to_json())
    return 0


def _eval_device(args: argparse.Namespace) -> int:
    from eval.candidates import parse_source
    from eval.device import DeviceEvalConfig, evaluate_device
    from eval.plots import plot_policy_curves
    from llm_cloud.paramgen.checkpoint import load_device_models
    from srm_device.fusion import FUSION_RULES
    from tandem.data.split import leave_one_out
    from tandem.errors import TandemError

    if args.fusion is not None and args.fusion not in FUSION_RULES:
        raise TandemError(f"--fusion {args.fusion!r} is not a rule; use one of {', '.join(FUSION_RULES)}")
    ratios = tuple(float(r) for r in args.ratios.split(","))
    if any(not 0 < r <= 1 for r in ratios):
        raise TandemError(f"--ratios {args.ratios!r} must be fractions in (0, 1], e.g. 0.05,0.2,1")
    if args.n_candidates < 10:
        raise TandemError(f"--n-candidates must be >= 10 for NDCG@10, got {args.n_candidates}")
    srm, ds, gen, book, recent_k = load_device_models(args.srm, args.paramgen)
    split = leave_one_out(ds.sequences)
    source = parse_source(args.candidates, srm, split.train)
    cfg = DeviceEvalConfig(n_candidates=args.n_candidates, staleness=args.staleness, recent_k=recent_k,
                           ratios=ratios, fusion=args.fusion)
    report = evaluate_device(srm, source, split.valid, split.test, cfg, gen, book)
    print(f"device rerank of {source.name} top-{cfg.n_candidates}, test split, {report['meta']['n_users']} users; "
          f"cached lists are {cfg.staleness} items stale")
    rows = [("static SRM", report["static"])]
    if report["generated"] is not None:
        rows.append(("generated", report["generated"]))
    rows += [(f"fusion {r}", m) for r, m in report["fusion"].items()]
    print(f"{'':<16}{'ndcg@10':>9}{'hr@10':>9}")
    for name, m in rows:
        print(f"{name:<16}{m['ndcg@10']:>9.4f}{m['hr@10']:>9.4f}")
    print(f"\nrequest policies (fusion {report['meta']['fusion_used_for_policies']}): ndcg@10 / bytes per user")
    print(f"{'':<14}" + "".join(f"{r:>16}" for r in next(iter(report["policies"].values()))))
    for name, by_ratio in report["policies"].items():
        print(f"{name:<14}" + "".join(f"{v['ndcg@10']:>9.4f}/{v['bytes_per_user']:>6.0f}" for v in by_ratio.values()))
    write_json(args.json, report)
    if args.plot:
        plot_policy_curves(report["policies"], args.plot, title=f"{ds.name} device tier: {source.name} candidates, "
                                                                f"{cfg.staleness}-item-stale cache")
    return 0


def _eval_collab(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.plots import plot_policy_curves
    from pipelines.collab_report import collab_report
    from tandem.artifacts import Store, default_store

    store = Store(Path(args.artifacts) if args.artifacts else default_store())
    report = collab_report(store, args.max_users)
    best = report["best"]
    print(f"test split, {report['n_users']} users, LLM top-{report['n_candidates']}; NDCG@10 / HR@10")
    rows = [("LLM alone", report["llm_alone"])]
    if report["srm_alone"]["full_catalogue"]:
        rows.append(("SRM alone (all)", report["srm_alone"]["full_catalogue"]))
    rows.append(("SRM in LLM list", report["srm_alone"]["in_llm_list_generated"]))
    rows += [(f"fusion {r}", m) for r, m in report["fusion"].items()]
    rows += [(f"collab {r}", m) for r, m in report["fusion_collab_srm"].items()]
    for name, m in rows:
        print(f"{name:<18}{m['ndcg@10']:>9.4f}{m['hr@10']:>9.4f}")
    print(f"best fusion {best['fusion_rule']} {best['fusion_ndcg@10']:.4f}, with the collaborative SRM "
          f"{best['collab_rule']} {best['collab_ndcg@10']:.4f}: {best['ratio_to_better_single']:.3f}x the better "
          f"single model ({best['better_single_ndcg@10']:.4f}), {best['ratio_to_srm_reranking_llm_list']:.3f}x the "
          f"SRM's own order inside the LLM's list")
    write_json(args.json, report)
    if args.plot:
        title = f"NDCG@10 against request ratio ({report['policies_srm']} SRM, {report['staleness']}-item-stale cache)"
        plot_policy_curves(report["policies"], args.plot, title=title)
        print(f"wrote {args.plot}")
    return 0


def _eval_thinkrec(args: argparse.Namespace) -> int:
    import torch

    from pipelines.thinkrec import run
    from pipelines.thinkrec_build import PipelineConfig

    torch.set_num_threads(args.threads)
    cfg = checked_config(PipelineConfig, args)
    report = run(cfg)
    print(dump({k: v for k, v in report.items() if k != "config"}))
    print(f"report: {cfg.out}/report.json", file=sys.stderr)
    return 0


def _eval_realtime(args: argparse.Namespace) -> int:
    from eval.plots import plot_realtime
    from pipelines.realtime import RealTimeRunConfig, run_realtime
    from tandem.data.protocols import SplitOptions

    cfg = checked_config(RealTimeRunConfig, args)
    split = checked_config(SplitOptions, args, protocol="realtime")
    try:
        report = run_realtime(options_from_args(args), split, cfg)
    except ValueError as exc:
        raise as_user_error(exc) from None
    rows = report["rows"]
    print(f"{report['dataset']['name']}, {report['protocol']['name']}: {rows['positions']:,} real-time positions of "
          f"{rows['users']:,} users")
    print(f"{'':<24}{'ndcg@10':>9}{'hr@10':>8}{'user ndcg':>10}{'auc':>8}{'uauc':>8}{'bytes down':>11}"
          f"{'device ms':>10}{'  vs static (ci95)':<35}{'vs static_nested'}")

    def interval(vs: dict | None) -> str:
        return f"  {vs['delta_ndcg@10']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]" if vs else ""

    for name, m in report["methods"].items():
        ms = m.get("device_ms_p50", m.get("device_update_ms_p50", float("nan")))
        own = interval(report.get("vs_static_nested", {}).get(name))
        print(f"{name:<24}{m['ndcg@10']:>9.4f}{m['hr@10']:>8.4f}{m['by_user']['ndcg@10']:>10.4f}{m['auc']:>8.4f}"
              f"{m['uauc']:>8.4f}{m['bytes_per_update']['down']:>11,}{ms:>10.2f}"
              f"{interval(report['vs_static'].get(name)):<35}{own}")
    if "retrain" in report["methods"]:
        r = report["methods"]["retrain"]
        print(f"retrain: device ms is per on-device update ({r['device_updates']:,} updates, p90 "
              f"{r['device_update_ms_p90']:.1f} ms, {r['device_state_mb']:.2f} MB of weights, gradients and Adam "
              f"state); the others' is per scored position")
    write_json(args.json, report)
    if args.plot:
        plot_realtime(report, args.plot, title=f"{report['dataset']['name']}, {report['protocol']['name']}")
        print(f"wrote {args.plot}")
    return 0


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate models", description="Evaluate models.")
    esub = ev.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    p = add_parser(esub, "srm", "evaluate an SRM checkpoint with full ranking: HR, NDCG and MRR at 5, 10, 20",
                   _eval_srm)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder written by `tandem train srm`")
    p.add_argument("--json", metavar="FILE", help="write {dataset, model, split, metrics} as JSON")
    p.add_argument("--split", choices=["test", "valid"], default="test",
                   help="which leave-one-out target (default: test)")
    p.add_argument("--mask-history", action=argparse.BooleanOptionalAction, default=None,
                   help="exclude the user's past items from the ranking (default: as in training)")
    add_dataset_arguments(p)

    p = add_parser(esub, "llm", "evaluate a generative recommender from its top-N lists (constrained beam search): "
                   "HR, NDCG and MRR at 5, 10, 20", _eval_llm)
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder written by `tandem llm sft`")
    p.add_argument("--json", metavar="FILE", help="write {dataset, model, split, metrics} as JSON")
    p.add_argument("--split", choices=["test", "valid"], default="test",
                   help="which leave-one-out target (default: test)")
    p.add_argument("--n", type=int, default=100, help="beams = items generated per user (default: 100)")
    p.add_argument("--batch-size", type=int, default=8, help="users decoded together (default: 8)")
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                   help="LLM engine (default: transformers; vllm needs the [vllm] extra)")
    p.add_argument("--max-users", type=int, metavar="N", help="evaluate the first N users only (a stated subset, "
                   "e.g. the users a CPU-sized smollm run trained on; default: all)")

    p = add_parser(esub, "device", "evaluate the device tier: static vs generated SRM, fusion rules, and request "
                   "policies against request ratio (test split; fitted on validation)", _eval_device)
    p.add_argument("--srm", required=True, metavar="DIR", help="device SRM checkpoint")
    p.add_argument("--paramgen", metavar="DIR", help="parameter generator (`tandem train paramgen --out`)")
    p.add_argument("--candidates", default="srm", metavar="SOURCE",
                   help="popular | srm (the device SRM) | srm:DIR (another SRM as the cloud) | llm:DIR (default: srm)")
    p.add_argument("--n-candidates", type=int, default=100, help="length of the cloud's list (default: 100)")
    p.add_argument("--staleness", type=int, default=5,
                   help="items the user consumed since the cached list was made (default: 5)")
    p.add_argument("--fusion", help="fusion rule used with the policies (default: best on validation)")
    p.add_argument("--ratios", default="0.05,0.1,0.2,0.5,1", help="request ratios (default: 0.05,0.1,0.2,0.5,1)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot NDCG@10 against request ratio per policy")

    p = add_parser(esub, "realtime", "the device tier on the real-time protocol: train the SRM and the parameter "
                   "generator on the cloud parts (resumable, in --work), then measure static, generated and Persona "
                   "parameters on every real-time position, with paired bootstrap intervals against static",
                   _eval_realtime)
    add_dataset_arguments(p)
    add_split_arguments(p, skip=("protocol", "nest"))
    from pipelines.realtime import RealTimeRunConfig

    add_dataclass_arguments(p.add_argument_group("run"), RealTimeRunConfig)
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of NDCG@10 per method with its interval")

    p = add_parser(esub, "collab", "end-to-end report of an artifact store on the test split: LLM alone, SRM alone, "
                   "every fusion rule with the independent and the collaborative SRM, and NDCG@10 against request "
                   "ratio per policy", _eval_collab)
    p.add_argument("--artifacts", metavar="DIR", help="artifact store of `tandem build` (default: the embedded "
                   "default, $TANDEM_HOME/artifacts/ml-100k-tiny)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot NDCG@10 against request ratio per policy")
    p.add_argument("--max-users", type=int, metavar="N", help="first N validation and test users only")

    p = add_parser(esub, "thinkrec", "build and measure a ThinkRec reasoning model (arXiv 2505.15091) on an ML-100K "
                   "subset: keywords, teacher traces, BCE+LM LoRA training, user-group experts; AUC/UAUC/NDCG@5 "
                   "without thinking, with thinking, with thinking + experts (resumable from --out)", _eval_thinkrec,
                   _thinkrec_args)


def _thinkrec_args(p: argparse.ArgumentParser) -> None:
    from pipelines.thinkrec_build import PipelineConfig
    from tandem.config import add_dataclass_arguments

    add_dataclass_arguments(p, PipelineConfig)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
