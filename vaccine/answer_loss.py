"""The causal-LM loss with the output layer applied to answer tokens only.

In a 135M model the 49k-vocabulary head is the largest matmul of a step, and most of it is wasted: prompt
and padding positions carry label -100 and never reach the loss. A forward pre-hook on the model's own output
layer hands it only the hidden states whose next token is an answer token, so the head computes (and keeps
for backward) K x vocab logits instead of batch x length x vocab. Everything the model does after the head
(Gemma's soft-capping, a logit scale) still runs, because the hook changes the head's input, not the model's
code. The loss is then the same token-weighted cross-entropy as ``transformers``' ``ForCausalLMLoss``
(float32, summed and divided by ``num_items_in_batch`` when given, else a mean).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # the label of positions the loss skips (prompt, padding); data.tokenize writes it


def output_layer(model: nn.Module) -> nn.Module | None:
    """The module that maps hidden states to vocabulary logits (through PEFT and DDP wrappers)."""
    unwrapped = getattr(model, "module", model)
    get = getattr(unwrapped, "get_output_embeddings", None)
    return get() if callable(get) else None


@contextmanager
def head_on_positions(head: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, ``head`` sees only the hidden states at ``keep`` (a batch x length-1 mask over the
    positions that predict a token), packed as one row: (1, K, hidden)."""

    def select(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        return (hidden[:, :-1][keep].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def answer_token_loss(
    model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, Any]:
    """(loss, outputs) where ``outputs.logits`` holds the answer positions only, shape (1, K, vocab)."""
    head = output_layer(model)
    if head is None:
        raise ValueError("answer_token_loss needs a model with get_output_embeddings()")
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rest = {key: value for key, value in inputs.items() if key != "labels"}
    with head_on_positions(head, keep):
        outputs = model(**rest)
    logits = outputs.logits.float().reshape(-1, outputs.logits.shape[-1])
    chosen = targets[keep].to(logits.device)
    if num_items_in_batch is None:
        loss = F.cross_entropy(logits, chosen, reduction="mean")
    else:
        total = F.cross_entropy(logits, chosen, reduction="sum")
        loss = total / torch.as_tensor(num_items_in_batch, device=total.device)
    return loss, outputs


def causal_lm_loss(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """The mean answer-token loss of ``inputs`` (labels included) for the passes a method adds to a step
    (a harmful gradient, a probe): the head on answer tokens when the model exposes it, else the model's
    own loss."""
    if output_layer(model) is None:
        return model(**inputs).loss
    return answer_token_loss(model, inputs)[0]
