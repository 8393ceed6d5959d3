"""Everything the service holds in memory, loaded once from an artifact store (:mod:`tandem.artifacts`).

The stack is the cloud LLM (behind a backend), the device SRM the server runs for thin clients (``srm/``, or the
LSC4Rec collaboratively fine-tuned ``collab/srm/`` when ``thresholds.json`` chose it, arXiv 2502.08667), the parameter
generator with its Persona codebook (and, when the store has a ``duet/`` folder, the multi-layer generator with
its own codebook), the dataset (catalogue and users' histories) and the fitted fusion and
request-policy numbers, and optionally the ThinkRec reasoning model (arXiv 2505.15091) that writes reasoning traces
(``--thinkrec DIR``, or ``<store>/thinkrec`` when it holds a built model). Anything missing or corrupt is a
:class:`~tandem.errors.TandemError` whose message names the file and the fix, so ``tandem serve`` can print it in
one line and ``/readyz`` can answer it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llm_cloud.backends import LLMBackend, load_backend
from llm_cloud.paramgen.model import ParamGenerator
from srm_device.fusion import FUSION_RULES, FusionParams, Platt
from srm_device.models import SequentialRecommender
from srm_device.persona import Codebook
from srm_device.policies import POLICIES, RequestPolicy, Threshold, make_policy
from tandem.artifacts import Store, Thresholds
from tandem.data.dataset import SequenceDataset
from tandem.errors import TandemError

if TYPE_CHECKING:
    from llm_cloud.paramgen.layers import LayerEditGenerator
    from llm_cloud.thinkrec.serve import Reasoner

THINKREC = "thinkrec"  # the store's default ThinkRec folder

@dataclass
class Stack:
    """The loaded store. ``threshold`` is the request policy's calibrated threshold at ``thresholds.request_ratio``;
    ``reasoner`` is the ThinkRec reasoning model, None when none is served."""

    store: Store
    thresholds: Thresholds
    backend: LLMBackend
    srm: SequentialRecommender
    generator: ParamGenerator
    codebook: Codebook
    dataset: SequenceDataset
    fusion_params: FusionParams
    policy: RequestPolicy
    threshold: Threshold
    reasoner: Reasoner | None = None
    layer_generator: LayerEditGenerator | None = None  # the store's optional duet/ folder
    layer_codebook: Codebook | None = None

    @property
    def n_items(self) -> int:
        return self.dataset.n_items

    def close(self) -> None:
        self.backend.close()
        if self.reasoner is not None:
            self.reasoner.close()


def _fix(store: Store) -> str:
    return f"run `tandem build --out {store.root}` (it rebuilds what is missing)"


def _check_layout(store: Store, th: Thresholds) -> None:
    if not store.root.is_dir():
        raise TandemError(f"artifact store {store.root} does not exist; {_fix(store)}")
    if not store.manifest.is_file():
        raise TandemError(f"{store.manifest} is missing, so {store.root} is not a built store; {_fix(store)}")
    folders = [store.llm, store.srm, store.paramgen] + ([store.collab_srm] if th.srm == "collab" else [])
    for folder in folders:
        if not folder.is_dir():
            raise TandemError(f"{folder} is missing from the artifact store; {_fix(store)}")
    if th.fusion not in FUSION_RULES:
        raise TandemError(f"{store.thresholds}: unknown fusion rule {th.fusion!r} (known: {', '.join(FUSION_RULES)})"
                          f"; {_fix(store)}")
    if th.policy not in POLICIES:
        raise TandemError(f"{store.thresholds}: unknown request policy {th.policy!r} (known: "
                          f"{', '.join(sorted(POLICIES))}); {_fix(store)}")
    ratio = f"{th.request_ratio:g}"
    if ratio not in th.thresholds.get(th.policy, {}):
        raise TandemError(f"{store.thresholds} has no threshold for policy {th.policy!r} at request ratio {ratio}; "
                          f"{_fix(store)}")


def _load(store: Store, backend: str, backend_options: dict) -> Stack:
    from llm_cloud.paramgen.checkpoint import load_paramgen
    from srm_device.training.checkpoint import load_checkpoint, load_srm_with_data

    store.read_manifest()  # raises on a corrupt manifest
    th = store.read_thresholds()
    _check_layout(store, th)
    srm, _, ds = load_srm_with_data(store.srm)
    if th.srm == "collab":
        srm, _ = load_checkpoint(store.collab_srm)
        if srm.n_items != ds.n_items:
            raise TandemError(f"{store.collab_srm} has {srm.n_items} items but {store.srm} has {ds.n_items}; "
                              f"{_fix(store)}")
    srm.eval().requires_grad_(False)
    gen, book, meta = load_paramgen(store.paramgen)
    if meta["n_items"] != ds.n_items or meta["hidden_size"] != srm.config.hidden_size:
        raise TandemError(f"{store.paramgen} was trained for another SRM ({meta['n_items']} items, width "
                          f"{meta['hidden_size']}); {_fix(store)}")
    llm = load_backend(backend, store.llm, **backend_options)
    if llm.artifact.n_items != ds.n_items:
        raise TandemError(f"{store.llm} knows {llm.artifact.n_items} items but the SRM's dataset has {ds.n_items}; "
                          f"{_fix(store)}")
    pt = th.thresholds[th.policy][f"{th.request_ratio:g}"]
    params = FusionParams(Platt(*th.srm_platt), Platt(*th.llm_platt), th.alpha)
    stack = Stack(store, th, llm, srm, gen, book, ds, params, make_policy(th.policy),
                  Threshold(pt.tau, pt.p_tie, pt.ratio))
    if (store.duet / "config.json").is_file():
        from llm_cloud.paramgen.layers import load_layer_generator

        layer_meta = json.loads((store.duet / "config.json").read_text())
        if (layer_meta.get("n_items") != ds.n_items or layer_meta.get("hidden_size") != srm.config.hidden_size
                or layer_meta.get("inner_size") != getattr(srm.config, "inner_size", None)):
            raise TandemError(f"{store.duet} was trained for another SRM; retrain it with `tandem train paramgen "
                              f"--edit layers --srm {store.srm} --out {store.duet}`, or remove it")
        stack.layer_generator, stack.layer_codebook = load_layer_generator(store.duet, ds.n_items)
    return stack


def thinkrec_folder(store: Store, thinkrec: str | Path | None) -> Path | None:
    """The ThinkRec folder to serve: ``thinkrec`` when given, else ``<store>/thinkrec`` when it holds a built model."""
    from llm_cloud.thinkrec.model import META

    if thinkrec is not None:
        return Path(thinkrec).expanduser()
    default = store.root / THINKREC
    return default if (default / META).is_file() else None


def load_stack(store_dir: str | Path, backend: str = "transformers", thinkrec: str | Path | None = None,
               **backend_options) -> Stack:
    """Load the store at ``store_dir``, and the ThinkRec reasoning model from ``thinkrec`` (default: the store's
    ``thinkrec/`` folder when it has one); any failure is a one-line :class:`TandemError` with the reason."""
    store = Store(Path(store_dir))
    try:
        stack = _load(store, backend, backend_options)
    except TandemError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file can fail in many libraries; report it as such
        raise TandemError(f"artifact store {store.root} could not be loaded ({type(exc).__name__}: {exc}); "
                          f"{_fix(store)}") from exc
    folder = thinkrec_folder(store, thinkrec)
    if folder is not None:
        from llm_cloud.thinkrec.serve import Reasoner

        try:
            stack.reasoner = Reasoner.load(folder, stack.dataset.catalogue, stack.srm.config.hidden_size,
                                           engine=backend)
        except BaseException:
            stack.close()
            raise
    return stack
