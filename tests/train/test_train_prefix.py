"""Sharing the common prompt prefix across a batch changes nothing but the cost."""

import pytest
import torch

from tuneforge.config import MethodConfig, ModelConfig
from tuneforge.data.format import IGNORE_INDEX
from tuneforge.models.adapters import attach_method
from tuneforge.models.load import load_model
from tuneforge.models.tiny import build_tiny_causal_lm
from tuneforge.train.data import TokenizedSplit, collate, shared_prefix_length, tokenize_rows
from tuneforge.train.loss import answer_loss, full_logits_loss

SYSTEM = {"role": "system", "content": "Classify the message. Answer with the label only."}


def rows(n=6):
    return [
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": "hello there " * (k + 1)},
                {"role": "assistant", "content": "fine " * (k % 3 + 1)},
            ]
        }
        for k in range(n)
    ]


@pytest.mark.parametrize("arch", ["llama", "gemma"])
@pytest.mark.parametrize("kind", ["lora", "full", "dora"])
def test_shared_prefix_gives_same_loss_and_gradients(tmp_path, arch, kind):
    model, tokenizer, _ = load_model(ModelConfig(name=str(build_tiny_causal_lm(tmp_path, arch))))
    model = attach_method(model, MethodConfig(kind=kind, dropout=0.0))
    model.train()
    split = tokenize_rows(rows(), tokenizer, 512)
    prefix = shared_prefix_length(split)
    assert prefix >= 10  # the system prompt and the user turn header
    batch = collate(split, list(range(len(split))), tokenizer.pad_token_id)

    def grads(prefix_len):
        model.zero_grad()
        loss, count = answer_loss(model, batch, 0, prefix_len)
        loss.backward()
        return (
            loss.item(),
            count.item(),
            {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad},
        )

    shared_loss, shared_count, shared_grads = grads(prefix)
    plain_loss, plain_count, plain_grads = grads(0)
    reference, ref_count = full_logits_loss(model, batch)
    assert shared_count == plain_count == ref_count.item()
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain_loss == pytest.approx(reference.item(), rel=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-4, rtol=1e-3)


def test_prefix_stops_before_first_label_and_leaves_a_suffix():
    split = TokenizedSplit(
        input_ids=[[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 9, 9, 9]],
        labels=[[IGNORE_INDEX] * 5 + [6, 7], [IGNORE_INDEX] * 6 + [9, 9]],
    )
    assert shared_prefix_length(split, minimum=1) == 4  # first label at 5: prefix ends at 4
    short = TokenizedSplit(
        input_ids=[[1, 2, 3], [1, 2, 3, 4]], labels=[[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 2, 3, 4]]
    )
    assert shared_prefix_length(short, minimum=1) == 0
    assert shared_prefix_length(TokenizedSplit([], [])) == 0


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_label_only_head_matches_full_logits_with_gradients(adapted_tiny_model, softcap):
    """The LM head on gathered label positions (with Gemma's logit soft-cap when set) gives the
    full computation's loss and gradients, for rows whose answers end at different places."""
    model, tokenizer = adapted_tiny_model("gemma")
    model.config.final_logit_softcapping = softcap  # read at each forward
    split = tokenize_rows(rows(), tokenizer, 512)
    batch = collate(split, list(range(len(split))), tokenizer.pad_token_id)
    results = []
    for loss_fn in (lambda: answer_loss(model, batch), lambda: full_logits_loss(model, batch)):
        model.zero_grad()
        loss, count = loss_fn()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), count.item(), grads))
    (gathered, n1, g1), (full, n2, g2) = results
    assert n1 == n2 > 0
    assert gathered == pytest.approx(full, rel=1e-5)
    for name, grad in g2.items():
        torch.testing.assert_close(g1[name], grad, atol=1e-5, rtol=1e-4)
