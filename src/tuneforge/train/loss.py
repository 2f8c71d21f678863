"""Next-token loss computed only where labels are set.

The LM head (vocabulary projection) is most of the forward cost of a small model with a large
vocabulary (Gemma 3 270M: 262k tokens), and a full [batch, seq, vocab] logits tensor dominates
activation memory. Only answer positions carry loss, so the head runs on the hidden states of
those positions alone and the full tensor is never built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.data.format import IGNORE_INDEX, round_up
from tuneforge.models.architecture import is_prompt_learning
from tuneforge.models.packed_attention import PACKED_ATTENTION, chunk_plan


def virtual_token_offset(model: Any) -> int:
    """Prompt tuning prepends trainable embeddings, shifting every position in the output."""
    if not is_prompt_learning(model):
        return 0
    config = model.active_peft_config
    if str(getattr(config, "peft_type", "")).endswith("PREFIX_TUNING"):
        return 0  # prefix tuning feeds past key/values; the sequence itself is not lengthened
    return int(config.num_virtual_tokens)


def _body_and_head(model: Any) -> tuple[Any, Any, float | None] | None:
    """(decoder stack, LM head, logit soft-cap) of a causal LM, seen through a PEFT wrapper.

    None when the model cannot be split that way, or must not be: prompt and prefix tuning.
    """
    if is_prompt_learning(model):
        return None  # the PEFT forward injects virtual tokens / past key-values
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder = getattr(causal, "get_decoder", None)
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    body = get_decoder() if callable(get_decoder) else None
    if body is None or head is None or body is causal:
        return None
    config = getattr(causal, "config", None)
    softcap = getattr(getattr(config, "text_config", config), "final_logit_softcapping", None)
    return body, head, softcap


def _uses_packed_attention(model: Any) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == PACKED_ATTENTION


def answer_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    offset: int = 0,
    prefix_len: int = 0,
    pad_to_multiple_of: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of label tokens) for a right-padded or a packed batch.

    batch: input_ids, attention_mask, labels [B, T]. Position t predicts token t+1. The LM head
    runs only on the N hidden states [N, H] whose next token is a label (gathered row by row),
    never on the [B, T, H] sequence; prompt-learning models, whose PEFT forward must add virtual
    tokens, keep the logits at the union of label positions across rows instead.

    prefix_len > 0: the first `prefix_len` tokens are identical in every row and carry no
    label (the system prompt and turn header). They are run once, for one row, and their
    keys/values shared by the batch, instead of recomputed B times; gradients flow back through
    the shared cache, so loss and gradients equal the unshared computation.

    A packed batch (`collate_packed`: attention_mask [1, 1, T, T] and position_ids) holds its
    examples in one row with the block mask that keeps them apart; prefix_len must be 0. A model
    set to `PACKED_ATTENTION` attends a long row a few examples at a time under slices of that
    mask (`models.packed_attention`): the same result without the row's T x T scores.

    pad_to_multiple_of > 1: the trimmed width is rounded up to a multiple of it (within the
    batch, which `Batching` pads to one), so batches come in a few shapes, not one per step.
    """
    input_ids, labels = batch["input_ids"], batch["labels"]
    packed = batch["attention_mask"].dim() == 4
    past = None
    positions = batch.get("position_ids")
    if prefix_len:
        if packed:
            raise ValueError("a packed batch holds its shared prefix already: prefix_len=0")
        batch_size, width = input_ids.shape
        shared = model(input_ids=input_ids[:1, :prefix_len], use_cache=True, logits_to_keep=1)
        past = shared.past_key_values
        past.batch_repeat_interleave(batch_size)
        input_ids, labels = input_ids[:, prefix_len:], labels[:, prefix_len:]
        positions = torch.arange(prefix_len, width, device=input_ids.device).expand(batch_size, -1)
    # [B, T]: the token each position predicts; the last position predicts nothing
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    is_label = targets != IGNORE_INDEX  # [B, T]
    # Tokens after a row's last label-predicting position change nothing: trim the batch to the
    # widest such position (the final newline after the end-of-turn token, for instance).
    width = int(is_label.any(dim=0).nonzero().max()) + 1 if bool(is_label.any()) else 1
    width = min(round_up(width, pad_to_multiple_of), input_ids.shape[1])
    chunks = None
    if packed and "segment_ids" in batch and _uses_packed_attention(model):
        chunks = chunk_plan(  # None for a short row: the mask, as below
            batch["segment_ids"][0, :width],
            batch["attention_mask"][0, 0, :width, :width],
            multiple=pad_to_multiple_of,
        )
    if chunks is not None:
        attention = None  # the chunks carry the mask
    elif packed:
        allowed = batch["attention_mask"][..., :width, :width]
        dtype = next(model.parameters()).dtype
        # Additive form: eager attention adds the mask to its scores; SDPA takes either.
        attention = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        attention.masked_fill_(~allowed, torch.finfo(dtype).min)
    else:
        attention = batch["attention_mask"][:, : prefix_len + width]
    split = _body_and_head(model)
    inputs = {
        "input_ids": input_ids[:, :width],
        "attention_mask": attention,
        "past_key_values": past,
        "position_ids": positions[:, :width] if positions is not None else None,
        "use_cache": past is not None,
    }
    if chunks is not None:
        inputs["packed_chunks"] = chunks
    if split is not None:
        body, head, softcap = split
        hidden = body(**inputs).last_hidden_state  # [B, width, H]
        logits = head(hidden[is_label[:, :width]])  # [N, V]
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        kept_targets = targets[:, :width][is_label[:, :width]]  # [N]
    else:
        keep = is_label.any(dim=0).nonzero().squeeze(1)  # [K]
        logits = model(**inputs, logits_to_keep=keep + offset).logits  # [B, K, V]
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
