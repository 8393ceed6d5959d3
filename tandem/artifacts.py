"""The artifact store: the folder that `tandem build` writes and `tandem serve` / `tandem eval collab` read.

Layout (every entry is written atomically, so a folder is either complete or absent)::

    DIR/manifest.json     what was built: versions, per-stage hashes, seconds and settings
    DIR/sids/             semantic IDs                       (tandem sids build)
    DIR/llm/              generative recommender checkpoint  (tandem llm sft)
    DIR/srm/              device SRM, SASRec                 (tandem train srm)
    DIR/paramgen/         hypernetwork + Persona codebook    (tandem train paramgen)
    DIR/duet/             optional multi-layer generator     (tandem train paramgen --edit layers)
    DIR/collab/           LSC4Rec: cached LLM candidates and the collaboratively fine-tuned SRM (tandem train collab)
    DIR/thresholds.json   fusion rule and parameters, request-policy thresholds, fitted on validation users

The default store is ``$TANDEM_HOME/artifacts/<dataset>-<profile>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.errors import TandemError
from tandem.paths import tandem_home

MANIFEST = "manifest.json"
THRESHOLDS = "thresholds.json"
STAGES = ("sids", "llm", "srm", "paramgen", "collab", "thresholds")


def default_store(dataset: str = "ml-100k", profile: str = "tiny") -> Path:
    return tandem_home() / "artifacts" / f"{Path(dataset).name}-{profile}"


@dataclass(frozen=True)
class Store:
    root: Path

    @property
    def sids(self) -> Path:
        return self.root / "sids"

    @property
    def llm(self) -> Path:
        return self.root / "llm"

    @property
    def srm(self) -> Path:
        return self.root / "srm"

    @property
    def paramgen(self) -> Path:
        return self.root / "paramgen"

    @property
    def duet(self) -> Path:
        """Optional: the multi-layer generator (``tandem train paramgen --edit layers``), served as ``duet``."""
        return self.root / "duet"

    @property
    def collab(self) -> Path:
        return self.root / "collab"

    @property
    def collab_srm(self) -> Path:
        return self.collab / "srm"

    @property
    def thresholds(self) -> Path:
        return self.root / THRESHOLDS

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def stage_path(self, stage: str) -> Path:
        """What a build stage's hash covers. For collab that is the tuned SRM only: the LLM-candidate cache beside it
        is a cache, which the thresholds stage and `tandem eval collab` keep filling."""
        return {"thresholds": self.thresholds, "collab": self.collab_srm}.get(stage) or getattr(self, stage)

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise TandemError(f"{self.manifest} is corrupt ({exc}); delete it and run `tandem build` again") from None

    def read_thresholds(self) -> Thresholds:
        try:
            return Thresholds.model_validate_json(self.thresholds.read_text())
        except FileNotFoundError:
            raise TandemError(f"{self.thresholds} is missing; run `tandem build --out {self.root}`") from None
        except ValidationError as exc:
            raise TandemError(f"{self.thresholds} is corrupt ({exc.errors()[0]['msg']}); delete it and run "
                              f"`tandem build --out {self.root}`") from None


class PolicyThreshold(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")  # "never" calibrates to tau = inf

    tau: float = Field(description="request when the policy's score > tau")
    p_tie: float = Field(ge=0, le=1, description="... and with this probability when it equals tau")
    ratio: float = Field(ge=0, le=1, description="the validation request ratio it was calibrated for")


class Thresholds(BaseModel):
    """What the `thresholds` stage fits on validation users, and the server applies (``thresholds.json``)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    fusion: str = Field(description="fusion rule used to rank (srm_device.fusion.FUSION_RULES)")
    srm_platt: tuple[float, float] = Field(description="Platt (a, b) of SRM logits")
    llm_platt: tuple[float, float] = Field(description="Platt (a, b) of LLM log-probabilities")
    alpha: float = Field(ge=0, le=1, description="weight of the `learned` rule")
    policy: str = Field(description="request policy the server applies (srm_device.policies.POLICIES)")
    request_ratio: float = Field(ge=0, le=1, description="its target request ratio")
    thresholds: dict[str, dict[str, PolicyThreshold]] = Field(
        description="policy -> request ratio (as '%g') -> calibrated threshold")
    n_candidates: int = Field(ge=1, le=100, description="LLM list length")
    staleness: int = Field(ge=0, description="items a cached list may lag behind the history before it is stale")
    recent_k: int = Field(ge=1, description="recent items the parameter generator reads")
    srm: Literal["srm", "collab"] = Field(description="which SRM folder ranks: srm/ or collab/srm/")
    valid: dict = Field(default_factory=dict, description="validation metrics behind these choices")


WEIGHT_SUFFIXES = (".safetensors", ".npy")  # what a stage computes; its logs, timings and paths are not in here


def _is_weight(rel: Path) -> bool:
    return rel.suffix in WEIGHT_SUFFIXES and "state" not in rel.parts[:-1]  # state/: resume scaffolding


def tree_hash(path: Path, keep=None) -> str:
    """sha256 over the relative names and bytes of every file under ``path`` (or of the file itself), 16 hex; with
    ``keep``, only of the files whose relative path it accepts."""
    h = hashlib.sha256()
    base = path.parent if path.is_file() else path
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.relative_to(base)
        if keep is not None and not keep(rel):
            continue
        h.update(str(rel).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def weights_hash(path: Path) -> str:
    """:func:`tree_hash` of what a stage computed: its tensors and arrays (``*.safetensors``, ``*.npy``, not under a
    ``state/`` resume folder), or the file itself for a one-file stage. Two builds with the same inputs give the same
    value, whatever their timings, folders or interruptions; :func:`tree_hash` covers every byte instead."""
    return tree_hash(path) if path.is_file() else tree_hash(path, keep=_is_weight)


def verify_store(root: Path) -> None:
    """Check every stage the manifest records against its files (:func:`tree_hash`); a :class:`TandemError` naming
    the first stage whose files were changed, truncated or removed, and the command that rebuilds it."""
    store = Store(Path(root))
    for stage, entry in store.read_manifest().get("stages", {}).items():
        path = store.stage_path(stage)
        if not path.exists():
            raise TandemError(f"artifact store {store.root}: stage {stage!r} is missing ({path}); rebuild it with "
                              f"`tandem build --out {store.root}`")
        if entry.get("hash") and tree_hash(path) != entry["hash"]:
            raise TandemError(f"artifact store {store.root}: the files of stage {stage!r} ({path}) no longer match "
                              f"the hash their build recorded (changed, truncated or partly deleted); rebuild it with "
                              f"`tandem build --out {store.root}`")
