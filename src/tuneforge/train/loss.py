"""Next-token loss computed only where labels are set.

The LM head (vocabulary projection) is most of the forward cost of a small model with a large
vocabulary (Gemma 3 270M: 262k tokens), and a full [batch, seq, vocab] logits tensor dominates
activation memory. Only answer positions carry loss, so we ask the model for logits at those
positions alone (`logits_to_keep` with an index tensor) and never build the full tensor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.data.format import IGNORE_INDEX


def virtual_token_offset(model: Any) -> int:
    """Prompt tuning prepends trainable embeddings, shifting every position in the output."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0
    if str(getattr(config, "peft_type", "")).endswith("PREFIX_TUNING"):
        return 0  # prefix tuning feeds past key/values; the sequence itself is not lengthened
    return int(config.num_virtual_tokens)


def answer_loss(
    model: Any, batch: dict[str, torch.Tensor], offset: int = 0, prefix_len: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of label tokens) for a right-padded batch.

    batch: input_ids, attention_mask, labels [B, T]. Position t predicts token t+1, so logits
    are kept at every t where some row has a label at t+1 (their union across the batch).

    prefix_len > 0: the first `prefix_len` tokens are identical in every row and carry no
    label (the system prompt and turn header). They are run once, for one row, and their
    keys/values shared by the batch, instead of recomputed B times; gradients flow back through
    the shared cache, so loss and gradients equal the unshared computation.
    """
    input_ids, labels = batch["input_ids"], batch["labels"]
    past = None
    positions = None
    if prefix_len:
        batch_size, width = input_ids.shape
        shared = model(input_ids=input_ids[:1, :prefix_len], use_cache=True, logits_to_keep=1)
        past = shared.past_key_values
        past.batch_repeat_interleave(batch_size)
        input_ids, labels = input_ids[:, prefix_len:], labels[:, prefix_len:]
        positions = torch.arange(prefix_len, width, device=input_ids.device).expand(batch_size, -1)
    targets = labels[:, 1:]  # [B, T-1]
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)  # [K]
    outputs = model(
        input_ids=input_ids,
        attention_mask=batch["attention_mask"],
        past_key_values=past,
        position_ids=positions,
        logits_to_keep=keep + offset,
        use_cache=past is not None,
    )
    logits = outputs.logits  # [B, K, V]
    kept_targets = targets[:, keep]  # [B, K]
    loss_sum = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        kept_targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, (kept_targets != IGNORE_INDEX).sum()


def full_logits_loss(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference computation (all logits), used by tests to check `answer_loss`."""
    outputs = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    )
    logits = outputs.logits[:, -batch["labels"].shape[1] : -1]  # drop virtual tokens, last pos
    targets = batch["labels"][:, 1:]
    loss_sum = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()
