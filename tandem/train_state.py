"""Per-epoch training state (weights, optimizer, progress) saved as one atomically replaced folder.

A training loop that saves after every epoch and loads at start is resumable: an interrupted run loses at most the
epoch in progress, and never leaves weights and progress that disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tandem.errors import TandemError
from tandem.io import atomic_directory


def save_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    with atomic_directory(folder) as tmp:
        weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "last.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")


def load_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Restore model and optimizer from ``folder``; None if there is no saved state."""
    if not (folder / "trainer_state.json").is_file():
        return None
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        model.load_state_dict(load_file(str(folder / "last.safetensors")), strict=True)
        opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    except (OSError, json.JSONDecodeError, RuntimeError, ValueError, SafetensorError) as exc:
        raise TandemError(f"training state in {folder} is damaged ({str(exc).splitlines()[0]}); pass --overwrite "
                          f"to start again") from None
    return state
