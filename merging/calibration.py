"""Calibration data for the data-driven parts of CKI (arXiv 2501.07596) and CAPS (Graft, arXiv 2506.23940) on LoRA
experts: the base model with a ΔW per target module, evaluated on (prompt, completion) examples.

- :meth:`DeltaModel.loss`: mean completion-token NLL of ``base + ΔW`` (differentiable in ΔW through
  ``torch.func.functional_call``; the base model stays frozen). CKI's learned local term is fitted on it.
- :meth:`DeltaModel.attribution`: CAPS's local functional attribution, gradient × weight on the task vector,
  ``A = mean_batches |∂L/∂W ⊙ ΔW|`` with L the expert's own loss on its own calibration data — the first-order
  estimate of how much the expert's loss rises if that element of its update is removed.
- :meth:`DeltaModel.delta_activations`: per example, the mean over its real tokens of the expert's *update* to each
  module's output, ``ΔW·x`` (n, out). CAPS's domain compatibility is the linear CKA of these between experts on the
  same inputs. The update, not the full output ``(W + ΔW)·x``, is compared: the shared base term dominates the full
  output and would make every pair of experts look compatible.

Calibration files are JSONL, one ``{"prompt": ..., "completion": ...}`` object per line; the loss is taken on the
completion tokens (followed by EOS) only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from tandem.errors import TandemError

Example = tuple[str, str]  # (prompt, completion)


def read_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    """The first ``limit`` examples of a calibration JSONL; a missing file or bad line is a one-line TandemError."""
    p = Path(path)
    if not p.is_file():
        raise TandemError(f"calibration file {p} does not exist; pass a JSONL file with one "
                          f'{{"prompt": ..., "completion": ...}} object per line')
    out: list[Example] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ex = (row["prompt"], row["completion"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TandemError(f"calibration file {p} line {n} is not a JSON object with string 'prompt' and "
                              f"'completion'; fix or remove that line") from None
        if not isinstance(ex[0], str) or not isinstance(ex[1], str) or not ex[1]:
            raise TandemError(f"calibration file {p} line {n}: 'prompt' and 'completion' must be strings and the "
                              f"completion non-empty")
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise TandemError(f"calibration file {p} holds no examples; add at least one prompt/completion line")
    return out


def encode(tok, batch: Sequence[Example], eos: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Left-padded ids (b, L), attention mask (b, L), labels (b, L) with -100 outside the completion, and the
    longest completion length (completions end every row, so only the last positions need logits)."""
    rows = []
    for p, t in batch:
        pi = tok(p, add_special_tokens=False)["input_ids"]
        ti = tok(t, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
        rows.append((pi + ti, [-100] * len(pi) + ti, len(ti)))
    n = max(len(r[0]) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = torch.tensor([[pad] * (n - len(r[0])) + r[0] for r in rows])
    mask = torch.tensor([[0] * (n - len(r[0])) + [1] * len(r[0]) for r in rows])
    labels = torch.tensor([[-100] * (n - len(r[1])) + r[1] for r in rows])
    return ids, mask, labels, max(r[2] for r in rows)


def token_nll(model, tok, batch: Sequence[Example], eos: bool = True,
              params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion NLL per example (b,) and completion token counts (b,); logits only on the last
    completion+1 positions. ``params`` replaces those parameters of ``model`` for this call (functional_call)."""
    ids, mask, labels, t_max = encode(tok, batch, eos)
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # (b, L): positions start at 0 after the left padding
    keep = t_max + 1
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "logits_to_keep": keep}
    out = (model(**kwargs) if params is None
           else torch.func.functional_call(model, params, args=(), kwargs=kwargs, strict=False))
    logits = out.logits  # (b, keep, V)
    tgt = labels[:, -keep + 1:]  # (b, keep-1)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tgt.clamp(min=0), reduction="none")
    on = (tgt != -100).float()
    return (nll * on).sum(1), on.sum(1)


def batches(examples: Sequence[Example], size: int) -> Iterator[list[Example]]:
    for i in range(0, len(examples), size):
        yield list(examples[i:i + size])


@torch.no_grad()
def mean_nll(model, tok, examples: Sequence[Example], batch_size: int = 16,
             params: dict[str, torch.Tensor] | None = None) -> float:
    """Token-weighted mean completion NLL over ``examples`` (see :func:`token_nll`)."""
    tot = cnt = 0.0
    for b in batches(examples, batch_size):
        s, c = token_nll(model, tok, b, params=params)
        tot, cnt = tot + float(s.sum()), cnt + float(c.sum())
    return tot / max(cnt, 1.0)


def load_tokenizer(folder: Path):
    """The folder's tokenizer. A folder whose ``tokenizer_config.json`` names a plain tokenizers-backed class is
    loaded as exactly that: ``AutoTokenizer`` would follow ``config.json``'s model type and rebuild, e.g., a
    word-level ``tokenizer.json`` as that model's BPE tokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg_file = folder / "tokenizer_config.json"
    saved = json.loads(cfg_file.read_text()).get("tokenizer_class") if cfg_file.is_file() else None
    if saved in ("PreTrainedTokenizerFast", "TokenizersBackend") and (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


class DeltaModel:
    """A frozen causal LM (the adapters' base) whose target modules can be evaluated at ``W + ΔW``."""

    def __init__(self, base_dir: str | Path, modules: Sequence[str], batch_size: int = 8) -> None:
        from transformers import AutoModelForCausalLM

        folder = Path(base_dir)
        self.tok = load_tokenizer(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.model.requires_grad_(False)
        self.modules = list(modules)
        self.batch_size = batch_size
        self.base = {m: self.model.get_submodule(m).weight.detach() for m in self.modules}  # m -> (out, in)

    def _params(self, deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"{m}.weight": self.base[m] + d for m, d in deltas.items()}  # (out, in) each

    def loss(self, deltas: dict[str, torch.Tensor], batch: Sequence[Example]) -> torch.Tensor:
        """Mean completion-token NLL of ``base + deltas`` on ``batch`` (differentiable in ``deltas``)."""
        nll, cnt = token_nll(self.model, self.tok, batch, params=self._params(deltas))
        return nll.sum() / cnt.sum().clamp_min(1)

    def mean_nll(self, deltas: dict[str, torch.Tensor], examples: Sequence[Example]) -> float:
        return mean_nll(self.model, self.tok, examples, self.batch_size, params=self._params(deltas))

    def attribution(self, deltas: dict[str, torch.Tensor], examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Gradient × weight, ``mean_batches |∂L/∂W ⊙ ΔW|`` per module (out, in), at ``W + ΔW``."""
        leaves = {m: d.detach().clone().requires_grad_(True) for m, d in deltas.items()}
        total = {m: torch.zeros_like(d) for m, d in leaves.items()}
        n = 0
        for b in batches(examples, self.batch_size):
            loss = self.loss(leaves, b)
            grads = torch.autograd.grad(loss, list(leaves.values()))
            for (m, d), g in zip(leaves.items(), grads):
                total[m] += (g * d.detach()).abs()  # (out, in)
            n += 1
        return {m: t / max(n, 1) for m, t in total.items()}

    @torch.no_grad()
    def delta_activations(self, deltas: dict[str, torch.Tensor],
                          examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Per example, the token-mean of each module's update ``ΔW·x`` over real tokens: m -> (n, out)."""
        feats: dict[str, list[torch.Tensor]] = {m: [] for m in deltas}
        mask_box: list[torch.Tensor] = []

        def hook(name: str):
            def fn(_mod, args, _out) -> None:
                x = args[0]  # (b, L, in)
                upd = x @ deltas[name].T  # (b, L, out)
                mask = mask_box[0].unsqueeze(-1).to(upd.dtype)  # (b, L, 1)
                feats[name].append((upd * mask).sum(1) / mask.sum(1).clamp_min(1))  # (b, out)
            return fn

        handles = [self.model.get_submodule(m).register_forward_hook(hook(m)) for m in deltas]
        try:
            for b in batches(examples, self.batch_size):
                ids, mask, _, _ = encode(self.tok, b)
                mask_box[:] = [mask]
                pos = (mask.cumsum(1) - 1).clamp(min=0)  # (b, L)
                torch.func.functional_call(self.model, self._params(deltas), args=(),
                                           kwargs={"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                                                   "logits_to_keep": 1}, strict=False)
        finally:
            for h in handles:
                h.remove()
        return {m: torch.cat(v) for m, v in feats.items()}  # m -> (n, out)
