"""Train the generative recommender with TRL's SFTTrainer on semantic-ID sequences (TIGER, arXiv 2305.05065).

    python -m llm_cloud.train.sft --config pipelines/configs/sft_tiny.yaml [--out DIR]
    accelerate launch -m llm_cloud.train.sft --config pipelines/configs/sft_tiny.yaml

The dataset handed to SFTTrainer is pre-tokenized: ``input_ids`` plus a ``labels`` column (see
:mod:`llm_cloud.generative.examples`). TRL uses a given ``labels`` column as is (no completion or assistant mask is
applied, no EOS is appended, nothing is re-tokenized), so the loss covers every item's code tokens except those of
items that an earlier window of the same user already trained; ``<bos>`` is never a target. Devices, data parallelism
and mixed precision all go through the Trainer, so the same script runs under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from llm_cloud.train.sft_config import SFTRunConfig, load_sft_config
from tandem.errors import TandemError


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm_cloud.train.sft", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="YAML run config, e.g. pipelines/configs/sft_tiny.yaml")
    parser.add_argument("--out", metavar="DIR", help="checkpoint folder (overrides output_dir of the config)")
    parser.add_argument("--overwrite", action="store_true", help="discard an interrupted run's trainer checkpoints "
                        "instead of resuming from them")
    parser.add_argument("--threads-file", metavar="FILE", help="a file holding a torch thread count, read before every "
                        "step; when it changes, training switches to that many threads (tandem build raises it once "
                        "the SRM branch is done with its core)")
    return parser


def threads_from_file(path: str | Path):
    """A ``TrainerCallback`` that sets torch's thread count from the file at ``path`` whenever the file changes
    (one ``stat`` per step). A missing or unreadable file changes nothing."""
    import torch
    from transformers import TrainerCallback

    class ThreadsFromFile(TrainerCallback):
        def __init__(self) -> None:
            self.path, self.seen = Path(path), None

        def on_step_begin(self, args, state, control, **kwargs) -> None:
            try:
                stamp = self.path.stat().st_mtime_ns
                if stamp == self.seen:
                    return
                self.seen = stamp
                threads = int(self.path.read_text().strip())
            except (OSError, ValueError):
                return
            if threads >= 1 and threads != torch.get_num_threads():
                torch.set_num_threads(threads)
                print(f"sft: {threads} torch thread(s) from step {state.global_step}", file=sys.stderr, flush=True)

    return ThreadsFromFile()


def _require_packages() -> None:
    for module, package in (("trl", "trl"), ("datasets", "datasets"), ("accelerate", "accelerate")):
        try:
            __import__(module)
        except ImportError:
            raise TandemError(f"package {package!r} is missing; install it with `pip install {package}` (or "
                              f"`pip install -e .` in the repository)") from None


def check_out_dir(out: Path) -> Path:
    """Refuse an output folder that holds anything but an earlier checkpoint: it is replaced as a whole."""
    from llm_cloud.generative.checkpoint import META_FILE

    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file()):
        raise TandemError(f"--out {out} exists and is not a generative-recommender checkpoint; it would be replaced "
                          f"as a whole, so pass a new or empty folder")
    return out


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or \
        torch.backends.mps.is_available()


def training_sequences(train: list, max_users: int | None, max_items: int | None) -> list:
    """The first ``max_users`` users' training sequences, each cut to its last ``max_items`` items (None: all)."""
    return [seq[-max_items:] if max_items else seq for seq in train[:max_users]]


def prepare_scratch(scratch: Path, run: dict, overwrite: bool) -> Path | None:
    """The trainer checkpoint to resume from in ``scratch`` (None: start fresh); refuses one made with other settings.

    ``scratch`` (``.<out>.trainer`` beside the output) holds the Trainer's periodic checkpoints (weights, optimizer,
    scheduler, RNG states) and ``tandem_run.json``, the settings they were made with. It is removed after success.
    """
    from llm_common.sft_run import last_checkpoint
    from tandem.io import atomic_write_json
    from tandem.train_state import check_resume

    record = scratch / "tandem_run.json"
    if overwrite:
        shutil.rmtree(scratch, ignore_errors=True)
    last = last_checkpoint(scratch)
    if last is not None and record.is_file():
        check_resume(scratch, json.loads(record.read_text()), run, "run_config", ())
        print(f"resuming from {last} (pass --overwrite to start again)", file=sys.stderr)
        return last
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    atomic_write_json(record, run)
    return None


def run_sft(cfg: SFTRunConfig, out: str | Path, overwrite: bool = False,
            threads_file: str | Path | None = None) -> Path:
    """Train and save the checkpoint folder ``out`` (replaced atomically by the main process); an interrupted run
    resumes from its last trainer checkpoint unless ``overwrite``. ``threads_file``: see :func:`threads_from_file`."""
    _require_packages()
    from llm_cloud.generative.profiles import PROFILES

    profile = PROFILES[cfg.profile]
    profile.check(cfg)
    out = check_out_dir(Path(out))
    from accelerate import PartialState
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from llm_cloud.generative.checkpoint import item_counts, write_extras
    from llm_cloud.generative.examples import lm_examples
    from llm_cloud.generative.stamp import detach_heads
    from llm_cloud.semantic_ids.cache import resolve_codes
    from llm_cloud.train import sft_extras
    from tandem import __version__
    from tandem.data.options import load_dataset
    from tandem.data.split import leave_one_out
    from tandem.io import atomic_directory

    ds = load_dataset(cfg.dataset_options)
    use_cpu = not _has_accelerator()  # so that CPU processes under torchrun form a gloo group (MULTI_CPU)
    state = PartialState(cpu=use_cpu)
    with state.main_process_first():  # with several processes, one builds the ID cache
        codes, sids_dir = resolve_codes(cfg.dataset_options, ds, cfg.sids)
    built = profile.build(cfg, codes, ds.catalogue)
    model, tokenizer, fmt = built.model, built.tokenizer, built.fmt
    split = leave_one_out(ds.sequences)
    sequences = training_sequences(split.train, cfg.max_users, cfg.max_train_items)
    train = Dataset.from_dict(lm_examples(sequences, fmt, cfg.max_items, cfg.window_stride))
    n_positions = fmt.max_length(cfg.max_items)

    scratch = out.parent / f".{out.name}.trainer"
    with state.main_process_first():
        resume = prepare_scratch(scratch, {"run_config": cfg.model_dump(mode="json"),
                                           "data_fingerprint": ds.fingerprint()}, overwrite)
    args = SFTConfig(
        output_dir=str(scratch), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler,
        label_smoothing_factor=cfg.label_smoothing,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        per_device_train_batch_size=cfg.batch_size, use_cpu=use_cpu, seed=cfg.seed, data_seed=cfg.seed, bf16=cfg.bf16,
        max_length=n_positions, packing=False, padding_free=False,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500, save_total_limit=1,
        eval_strategy="no", report_to="none", logging_steps=50,
    )
    prune, prune_callbacks = sft_extras.pruning(cfg, model, fmt)
    trainer_cls = sft_extras.trainer_class(cfg, SFTTrainer, profile.fused_loss, model, fmt)
    callbacks = prune_callbacks + ([threads_from_file(threads_file)] if threads_file else [])
    trainer = trainer_cls(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                          callbacks=callbacks or None)
    start = time.perf_counter()
    with prune:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    if trainer.is_world_process_zero():
        meta = {
            "profile": cfg.profile, "run_config": cfg.model_dump(mode="json"),
            "dataset": cfg.dataset_options.to_dict(), "dataset_name": ds.name, "n_items": ds.n_items,
            "data_fingerprint": ds.fingerprint(), "sids": str(sids_dir), "code_shape": list(codes.shape),
            "max_items": cfg.max_items, "n_train_users": len(sequences), "n_train_windows": len(train),
            "train_seconds": seconds, "train_loss": result.training_loss, "train_steps": result.global_step,
            "resumed_from": resume.name if resume else None, "tandem_version": __version__,
        }
        trained = trainer.accelerator.unwrap_model(trainer.model)
        detach_heads(trained)  # STAMP's auxiliary heads are for training only
        with atomic_directory(out) as tmp:
            profile.save(trained, tokenizer, tmp)
            write_extras(tmp, codes, meta, fmt, item_counts(split.train, ds.n_items))
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"trained {len(train)} windows for {cfg.epochs:g} epochs in {seconds:.0f} s, loss "
              f"{result.training_loss:.4f}; wrote {out}", file=sys.stderr)
    trainer.accelerator.wait_for_everyone()
    return out


def main(argv: list[str] | None = None) -> int:
    from tandem.process import die_with_parent

    die_with_parent()  # started by `tandem build`: a killed build takes this trainer with it
    args = make_parser().parse_args(argv)
    try:
        cfg = load_sft_config(args.config)
        run_sft(cfg, args.out or cfg.output_dir, args.overwrite, args.threads_file)
    except TandemError as exc:
        print(f"sft: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
