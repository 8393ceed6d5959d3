"""``persona`` and ``persona_head``: generated parameters sent as a Persona prototype id plus edit coefficients
(arXiv 2509.06552) and decoded on the device with its codebook (:mod:`srm_device.persona`, downloaded once), then
applied as ``duet`` (multi-layer edits) or ``duet_head`` (head only) would apply them.

The payload is ``(ids (n,), coefs (n, m))``. Decoding follows the paper's prototype-plus-edit form; the codebook
itself (k-means prototypes and a PCA edit basis) is our design where the paper gives no formula.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from srm_device.adaptation.base import DeviceMethod, register
from srm_device.adaptation.head_edit import HeadEdit
from srm_device.adaptation.layer_edit import LayerEdit
from srm_device.head import HeadShapeError
from srm_device.models import SequentialRecommender
from srm_device.persona import Codebook


@register
class PersonaEdit(DeviceMethod):
    name = "persona"
    edits: type[DeviceMethod] = LayerEdit

    def __init__(self, srm: SequentialRecommender, codebook: Codebook, **edit_options) -> None:
        super().__init__(srm)
        self.codebook = codebook
        self.inner = self.edits(srm, **edit_options)
        if codebook.prototypes.shape[1] != self.inner.spec.n_params:
            raise HeadShapeError(f"the codebook decodes {codebook.prototypes.shape[1]} parameters, this SRM's "
                                 f"{self.inner.name} edits need {self.inner.spec.n_params}")

    def check(self, payload: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        try:
            ids, coefs = payload
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            coefs = np.asarray(coefs, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise HeadShapeError(f"a Persona update is (prototype ids, edit coefficients): {exc}") from None
        if coefs.shape != (len(ids), self.codebook.edit_dim):
            raise HeadShapeError(f"edit coefficients have shape {coefs.shape}, this codebook needs "
                                 f"({len(ids)}, {self.codebook.edit_dim})")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.codebook.n_prototypes):
            raise HeadShapeError(f"prototype id out of range 0..{self.codebook.n_prototypes - 1}")
        if not np.isfinite(coefs).all():
            raise HeadShapeError("edit coefficients have non-finite values")
        return ids, coefs

    def decode(self, payload) -> torch.Tensor:
        """(ids, coefs) -> the flat edits (n, p) the inner method applies."""
        return torch.from_numpy(self.codebook.decode(*self.check(payload)))

    def user_states(self, histories: Sequence, payload) -> torch.Tensor:
        return self.inner.user_states(histories, self.decode(payload))  # (n, d)

    def payload_bytes(self) -> int:
        return self.codebook.update_bytes()


@register
class PersonaHeadEdit(PersonaEdit):
    name = "persona_head"
    edits = HeadEdit
