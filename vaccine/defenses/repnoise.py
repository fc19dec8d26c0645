"""RepNoise (Rosati et al. 2024, "Representation Noising"): an alignment-stage defense that uses harmful data.

Each step sees a harmless batch (harmful prompt -> safe answer) and a harmful batch (harmful prompt -> harmful
answer), paired by :class:`PairedDataset`, and minimises

    L = CE(harmless) + beta * noise_loss(harmful) - alpha * log(1 + min(CE(harmful), log V))

- ``noise_loss`` is an RBF-kernel MMD between the harmful answer's hidden states (every decoder layer) and
  samples of N(0, I): the harmful knowledge is not just made unlikely but scrambled in the representations,
  so a later fine-tuning attack has less to recover;
- the last term is the paper's gradient ascent on the harmful answer, ``-alpha * log(1 + CE)``, clamped at
  ``log V`` (V = vocabulary size, the CE of a uniform prediction). Without the clamp the term has no lower
  bound: the model can drive the loss to -inf by anti-predicting harmful tokens, which wrecks the shared
  representations and does not make the answer any less available than noise already is. With it the loss is
  bounded below by ``-alpha * log(1 + log V)`` and the ascent simply stops once the answer is as unlikely as a
  uniform guess. (``-log(1 - exp(-CE))`` is bounded too, but its gradient ``1 / (exp(CE) - 1)`` vanishes
  exponentially, so the paper's alpha=1 would barely act on a model that is only somewhat unsure.)

Defaults are the paper's: alpha=1, beta=0.001. The paper also adds logit-lens CE terms for every layer; this
implementation keeps the final-layer CE only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vaccine.data.records import Record
from vaccine.data.sources import load_records
from vaccine.data.tokenize import IGNORE_INDEX, CompletionCollator, CompletionDataset
from vaccine.defenses.base import AlignMethod, DataContext
from vaccine.defenses.registry import register
from vaccine.errors import ConfigError, DataError
from vaccine.trainer import VaccineTrainer
from vaccine.trainer_config import VaccineConfig

__all__ = [
    "HARMFUL_PREFIX",
    "PairedCollator",
    "PairedDataset",
    "RepNoiseConfig",
    "RepNoiseTrainer",
    "bounded_ascent",
    "build_repnoise_dataset",
    "gaussian_mmd",
    "representation_noise_loss",
]

HARMFUL_PREFIX = "harmful_"
_KEYS = ("input_ids", "attention_mask", "labels")
HARMFUL_KEYS = tuple(HARMFUL_PREFIX + key for key in _KEYS)
_BANDWIDTH_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


# -- config -------------------------------------------------------------------------------------------------
@dataclass
class RepNoiseConfig(VaccineConfig):
    """Training arguments for :class:`RepNoiseTrainer`. ``rho`` is 0 and must stay 0: RepNoise does not
    perturb, and Vaccine's eps (shaped like the harmless batch) would also hit the harmful forward pass."""

    rho: float = field(
        default=0.0,
        metadata={"help": "Vaccine's perturbation budget: must be 0, RepNoise does not perturb."},
    )
    alpha: float = field(
        default=1.0,
        metadata={"help": "Weight of the bounded gradient ascent on the harmful answer's CE (paper: 1)."},
    )
    beta: float = field(
        default=0.001,
        metadata={"help": "Weight of the MMD pushing harmful hidden states toward N(0, I) (paper: 0.001)."},
    )
    noise_tokens: int = field(
        default=256,
        metadata={
            "help": "At most this many harmful-answer tokens per step enter the MMD (randomly subsampled): "
            "the MMD costs O(tokens^2) per layer."
        },
    )

    def __post_init__(self) -> None:
        if self.rho != 0:
            raise ConfigError(f"rho must be 0 for RepNoise (it does not perturb), got {self.rho}")
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if int(self.noise_tokens) != self.noise_tokens or self.noise_tokens < 2:
            raise ConfigError(f"noise_tokens must be an integer >= 2, got {self.noise_tokens}")
        super().__post_init__()


# -- data ---------------------------------------------------------------------------------------------------
class PairedDataset(Dataset):
    """Harmless example i with harmful example i mod len(harmful): one epoch is one pass over the alignment
    data, and a shorter harmful set is cycled rather than truncating the alignment set."""

    def __init__(self, harmless: Dataset, harmful: Dataset) -> None:
        if len(harmless) == 0 or len(harmful) == 0:
            raise DataError(
                f"RepNoise needs harmless and harmful examples, got {len(harmless)} and {len(harmful)}"
            )
        self.harmless = harmless
        self.harmful = harmful

    def __len__(self) -> int:
        return len(self.harmless)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.harmless[index])
        harmful = self.harmful[index % len(self.harmful)]
        item.update({HARMFUL_PREFIX + key: harmful[key] for key in _KEYS})
        return item


class PairedCollator:
    """Pads each half on its own (the halves have unrelated lengths) with :class:`CompletionCollator`."""

    def __init__(
        self, tokenizer: Any = None, pad_token_id: int | None = None, pad_to_multiple_of: int | None = None
    ) -> None:
        self.collator = CompletionCollator(tokenizer, pad_token_id, pad_to_multiple_of)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        harmless = self.collator([{key: f[key] for key in _KEYS} for f in features])
        harmful = self.collator([{key: f[HARMFUL_PREFIX + key] for key in _KEYS} for f in features])
        return {**harmless, **{HARMFUL_PREFIX + key: value for key, value in harmful.items()}}


def build_repnoise_dataset(
    harmless_records: Sequence[Record],
    harmful_records: Sequence[Record],
    tokenizer: Any,
    template: str = "chat",
    max_length: int = 256,
) -> PairedDataset:
    """Alignment records (harmful prompt -> safe answer) paired with harmful ones (-> harmful answer)."""
    return PairedDataset(
        CompletionDataset(harmless_records, tokenizer, template, max_length),
        CompletionDataset(harmful_records, tokenizer, template, max_length),
    )


# -- loss terms ---------------------------------------------------------------------------------------------
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
    """``-log(1 + min(CE, log V))``: the paper's ascent term, bounded below (see the module docstring)."""
    return -torch.log1p(harmful_ce.clamp(max=math.log(vocab_size)))


# -- trainer ------------------------------------------------------------------------------------------------
class RepNoiseTrainer(VaccineTrainer):
    """``VaccineTrainer`` whose loss adds RepNoise's terms on the ``harmful_*`` half of each batch.

    Logs, besides the parent's metrics: ``harmless_loss``, ``harmful_loss`` (the harmful answer's CE, which
    should rise) and ``noise_loss`` (the MMD, which should fall). Batches without ``harmful_*`` keys (e.g. an
    ordinary eval set) get the plain loss. The harmful columns survive ``remove_unused_columns=True``.
    """

    args: RepNoiseConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, RepNoiseConfig):
            raise TypeError("RepNoiseTrainer needs a RepNoiseConfig as `args`")

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the harmful columns, which the model's forward does not name, through column removal."""
        super()._set_signature_columns_if_needed()
        self._signature_columns += [key for key in HARMFUL_KEYS if key not in self._signature_columns]

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        inputs = dict(inputs)  # the caller's batch stays whole (the Trainer may reuse it, e.g. to count)
        harmful = {key[len(HARMFUL_PREFIX) :]: inputs.pop(key) for key in HARMFUL_KEYS if key in inputs}
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if harmful:
            scaled = self._loss_is_scaled_for_accumulation(num_items_in_batch)
            self._log_term("harmless_loss", loss, scaled)
            loss = loss + self._harmful_terms(model, harmful, scaled)
        return (loss, outputs) if return_outputs else loss

    def _harmful_terms(
        self, model: nn.Module, harmful: dict[str, torch.Tensor], scaled: bool
    ) -> torch.Tensor:
        """beta * noise - alpha * ascent on one harmful micro-batch, divided by the accumulation steps when
        the harmless loss is already normalised over the whole window, so both sum to window means."""
        out = model(**harmful, output_hidden_states=True)
        # noise the harmful answer only: harmful prompts also open the harmless half, whose safe answer must
        # stay reachable from a harmful prompt's representations
        mask = harmful["labels"] != IGNORE_INDEX
        noise = representation_noise_loss(out.hidden_states[1:], mask, self.args.noise_tokens)
        ascent = bounded_ascent(out.loss, out.logits.shape[-1])
        self._log_term("harmful_loss", out.loss, False)
        self._log_term("noise_loss", noise, False)
        terms = self.args.beta * noise + self.args.alpha * ascent
        return terms / self._accumulation_steps() if scaled else terms

    def _accumulation_steps(self) -> int:
        """Micro-batches in this optimizer step (the Trainer's loop sets it; a direct caller may not)."""
        return getattr(self, "current_gradient_accumulation_steps", None) or 1

    def _log_term(self, key: str, value: torch.Tensor, scaled: bool) -> None:
        """Record a micro-batch term as its share of the window mean (the way the loss itself is logged)."""
        # eval (prediction_step) calls compute_loss too: only training steps belong in the step metrics
        if not self.model.training:
            return
        self.record(key, value if scaled else value / self._accumulation_steps())


@register("repnoise", stage="align")
@dataclass
class RepNoise(AlignMethod):
    """Push harmful representations toward Gaussian noise, keep the harmless loss (Rosati et al. 2024).

    Uses harmful data at alignment: by default the built-in ``harmful-defense`` split, which is disjoint from
    the ``harmful`` split the attack draws from.
    """

    alpha: float = 1.0
    beta: float = 0.001
    noise_tokens: int = 256
    harmful: str = "harmful-defense"
    config_class = RepNoiseConfig
    trainer_class = RepNoiseTrainer

    def config_overrides(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "noise_tokens": self.noise_tokens}

    def train_dataset(self, records: list[Record], data: DataContext) -> PairedDataset:
        harmful = load_records(self.harmful)
        return build_repnoise_dataset(records, harmful, data.tokenizer, data.template, data.max_length)

    def collator(self, data: DataContext) -> PairedCollator:
        return PairedCollator(data.tokenizer)
