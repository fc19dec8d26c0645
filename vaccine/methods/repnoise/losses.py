"""RepNoise's loss terms: the MMD that pushes harmful hidden states toward N(0, I) and the bounded ascent."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

_BANDWIDTH_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared MMD (biased, so >= 0; at most 2) between ``x`` (n, d) and ``y`` (m, d), under a mean of RBF
    kernels.

    The bandwidths are multiples of the mean pairwise squared distance (detached, as in the DAN-style MMD the
    original code uses): a fixed bandwidth would saturate on real hidden states, whose norms are far from
    sqrt(d), and the kernel's gradient would vanish exactly when the push toward noise is most needed.
    """
    x, y = x.float(), y.float()
    joint = torch.cat([x, y])
    distances = torch.cdist(joint, joint).pow(2)
    n = joint.shape[0]
    base = distances.detach().sum() / max(n * n - n, 1)
    base = base.clamp_min(1e-6)
    kernel = sum(torch.exp(-distances / (base * m)) for m in _BANDWIDTH_MULTIPLIERS) / len(
        _BANDWIDTH_MULTIPLIERS
    )
    k = x.shape[0]
    return kernel[:k, :k].mean() + kernel[k:, k:].mean() - 2 * kernel[:k, k:].mean()


def _noise_positions(mask: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Flat indices of at most ``max_tokens`` masked positions, drawn with the global RNG (which the Trainer
    seeds and checkpoints, so runs and resumed runs draw the same tokens)."""
    positions = mask.reshape(-1).nonzero().squeeze(-1)
    if positions.numel() > max_tokens:
        keep = torch.randperm(positions.numel(), device=positions.device)[:max_tokens]
        positions = positions[keep.sort().values]
    return positions


def representation_noise_loss(
    hidden_states: Sequence[torch.Tensor], mask: torch.Tensor, max_tokens: int = 256
) -> torch.Tensor:
    """Mean over layers of the MMD between the masked tokens' hidden vectors and fresh N(0, I) samples.

    ``hidden_states`` are the decoder layers' outputs (layers 1..L, not the embeddings, which are a lookup
    table). The same token subsample serves every layer. Fewer than 2 tokens give 0 (no MMD to estimate).
    """
    positions = _noise_positions(mask, max_tokens)
    if positions.numel() < 2:
        return hidden_states[0].new_zeros((), dtype=torch.float32)
    losses = []
    for hidden in hidden_states:
        tokens = hidden.reshape(-1, hidden.shape[-1])[positions]
        noise = torch.randn(tokens.shape, device=tokens.device, dtype=torch.float32)
        losses.append(gaussian_mmd(tokens, noise))
    return torch.stack(losses).mean()


def bounded_ascent(harmful_ce: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``-log(1 + min(CE, log V))``: the paper's ascent term, bounded below (see the package docstring)."""
    return -torch.log1p(harmful_ce.clamp(max=math.log(vocab_size)))
