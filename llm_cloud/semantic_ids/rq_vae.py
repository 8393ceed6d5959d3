"""RQ-VAE quantiser (TIGER, Rajput et al., NeurIPS 2023, arXiv 2305.05065), small enough to train on CPU.

An MLP encoder maps an item embedding to a latent z; L residual codebooks quantise z (level l picks the codeword
nearest to what levels 1..l-1 left); an MLP decoder reconstructs the embedding from the sum of the chosen codewords.
Gradients pass the quantiser by the straight-through estimator. The loss is
reconstruction MSE + sum over levels of (||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2) (codebook + commitment
terms, sg = stop-gradient). As in TIGER, codebooks are initialised by k-means on the first latents, which avoids most
dead codes.

Two choices keep the small CPU run stable: inputs are standardised per dimension (MiniLM rows are unit-norm, so raw
per-dimension values are ~0.05 and the reconstruction loss would be tiny), and the codebooks learn 10x faster than
the networks. Without the latter the latents grow faster than the codebooks can follow, and the quantisation loss
rises for the first few hundred steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llm_cloud.semantic_ids.rq_kmeans import rq_kmeans


class RQVAE(nn.Module):
    """Encoder MLP -> L residual codebooks (straight-through) -> decoder MLP."""

    def __init__(self, in_dim: int, levels: int = 3, codebook_size: int = 256, latent_dim: int = 32,
                 hidden: int = 128, beta: float = 0.25) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, in_dim))
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(codebook_size, latent_dim) * 0.1) for _ in range(levels)])  # L x (C, k)

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, k) latents -> (straight-through quantised (b, k), codes (b, L), codebook + commitment loss)."""
        residual = z  # (b, k)
        quantised = torch.zeros_like(z)  # (b, k)
        codes, loss = [], z.new_zeros(())
        for codebook in self.codebooks:
            idx = torch.cdist(residual, codebook).argmin(dim=1)  # (b,)
            chosen = codebook[idx]  # (b, k)
            loss = loss + F.mse_loss(chosen, residual.detach()) + self.beta * F.mse_loss(residual, chosen.detach())
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(idx)
        straight_through = z + (quantised - z).detach()  # (b, k): forward = quantised, gradient flows to z
        return straight_through, torch.stack(codes, dim=1), loss  # (b, k), (b, L), ()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, d) -> (reconstruction (b, d), codes (b, L), total loss)."""
        z = self.encoder(x)  # (b, k)
        zq, codes, q_loss = self.quantise(z)  # (b, k), (b, L)
        recon = self.decoder(zq)  # (b, d)
        return recon, codes, F.mse_loss(recon, x) + q_loss

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, seed: int) -> None:
        """Set each level's codebook to residual k-means centroids of the current latents (TIGER's init)."""
        z = self.encoder(x).double().numpy()  # (n, k)
        fit = rq_kmeans(z, len(self.codebooks), self.codebooks[0].shape[0], seed)
        for codebook, centroids in zip(self.codebooks, fit.codebooks):
            codebook[: len(centroids)] = torch.as_tensor(centroids, dtype=codebook.dtype)  # (C_l, k)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> codes (n, L)."""
        return self.quantise(self.encoder(x))[1]


@dataclass
class RQVAEResult:
    codes: np.ndarray  # (n, L) int64
    losses: list[float] = field(default_factory=list)  # total loss per step
    model: RQVAE | None = None


def train_rq_vae(x: np.ndarray, levels: int = 3, codebook_size: int = 256, steps: int = 300, batch_size: int = 256,
                 lr: float = 1e-3, codebook_lr: float = 1e-2, latent_dim: int = 32, hidden: int = 128,
                 seed: int = 0) -> RQVAEResult:
    """Train an RQ-VAE on the standardised rows of ``x`` (n, d) for ``steps`` Adam steps; return every row's codes."""
    if levels < 1 or codebook_size < 2 or steps < 1:
        raise ValueError(f"need levels >= 1, codebook_size >= 2 and steps >= 1, got {levels}, {codebook_size}, "
                         f"{steps}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = np.asarray(x, dtype=np.float64)  # (n, d)
    data = torch.as_tensor((x - x.mean(0)) / np.maximum(x.std(0), 1e-8), dtype=torch.float32)  # (n, d) standardised
    model = RQVAE(data.shape[1], levels, codebook_size, latent_dim, hidden)
    model.init_codebooks(data, seed)
    books = list(model.codebooks.parameters())
    nets = [p for name, p in model.named_parameters() if not name.startswith("codebooks.")]
    opt = torch.optim.Adam([{"params": nets}, {"params": books, "lr": codebook_lr}], lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(0, len(data), (min(batch_size, len(data)),), generator=gen)]  # (b, d)
        _, _, loss = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    codes = model.encode_codes(data).numpy().astype(np.int64)  # (n, L)
    return RQVAEResult(codes=codes, losses=losses, model=model)
