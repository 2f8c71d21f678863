"""Prediction: label trie decoding, exact label scoring, free generation, prefix sharing.

Every fast path is checked against a brute-force reference: one full forward per (example,
label) without any cache, or transformers' own `generate`.
"""

from __future__ import annotations

import pytest
import torch

from tuneforge.config import MethodConfig, ModelConfig
from tuneforge.eval.labels import LabelSet
from tuneforge.eval.predict import (
    Predictor,
    Sampling,
    common_prefix_length,
    length_batches,
    resolve_scoring,
)
from tuneforge.models.architecture import sliding_window
from tuneforge.models.load import load_model
from tuneforge.models.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYSTEM = {"role": "system", "content": "Classify the message. Answer with the label only."}
TEXTS = [
    "I loved this film",
    "the food was cold and bland",
    "hello",
    "A small language model learns to answer questions about many things.",
    "def add(a, b): return a + b",
    "good morning",
]
LABELS = ["positive", "negative", "neutral", "mixed feelings"]


def conversations(system=True):
    return [([SYSTEM] if system else []) + [{"role": "user", "content": t}] for t in TEXTS]


@pytest.fixture(scope="module", params=["llama", "gemma"])
def tiny(request, tmp_path_factory):
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp(request.param), request.param)
    model, tokenizer, _ = load_model(ModelConfig(name=str(directory)))
    return model, tokenizer


def brute_force_scores(model, prompt, label_set):
    """Sum log p(label tokens | prompt) by one uncached forward per label."""
    scores = []
    with torch.no_grad():
        for seq in label_set.sequences:
            ids = torch.tensor([prompt + seq])
            logits = model(input_ids=ids, use_cache=False).logits[0, -len(ids[0]) :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            scores.append(sum(logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(seq)))
    return scores


def test_labels_are_tokenized_as_answers_with_the_turn_end(tiny):
    _, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, LABELS, conversations()[0])
    end = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else "<end_of_turn>"
    for label, seq in zip(LABELS, label_set.sequences, strict=True):
        assert tokenizer.convert_ids_to_tokens(seq[-1]) == end
        assert tokenizer.decode(seq[:-1]) == label


def test_labels_after_a_few_shot_context_are_the_last_answer_only(tiny):
    _, tokenizer = tiny
    shots = [{"role": "user", "content": "nice"}, {"role": "assistant", "content": "positive"}]
    plain = LabelSet.build(tokenizer, LABELS, conversations()[0])
    few_shot = LabelSet.build(tokenizer, LABELS, [SYSTEM, *shots, conversations()[0][-1]])
    assert few_shot.sequences == plain.sequences


def test_few_shot_prompts_score_like_a_full_forward(tiny):
    """Long shared prefix + many labels: the packed continuation path against brute force."""
    model, tokenizer = tiny
    shots = []
    for text, label in zip(TEXTS[:4], LABELS, strict=True):
        shots += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    prompts_messages = [[SYSTEM, *shots, {"role": "user", "content": t}] for t in TEXTS[4:]]
    predictor = Predictor(model, tokenizer, batch_size=2)
    prompts = predictor.encode(prompts_messages)
    label_set = LabelSet.build(tokenizer, LABELS, prompts_messages[0])
    scores = predictor.score_labels(prompts, label_set)
    for i, prompt in enumerate(prompts):
        assert scores[i].tolist() == pytest.approx(
            brute_force_scores(model, prompt, label_set), abs=2e-4
        )


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_exact_scores_match_a_full_forward_per_label(tiny, share_prefix, batch_size):
    model, tokenizer = tiny
    predictor = Predictor(model, tokenizer, batch_size=batch_size, share_prefix=share_prefix)
    prompts = predictor.encode(conversations())
    label_set = LabelSet.build(tokenizer, LABELS, conversations()[0])
    scores = predictor.score_labels(prompts, label_set)
    for i, prompt in enumerate(prompts):
        expected = brute_force_scores(model, prompt, label_set)
        assert scores[i].tolist() == pytest.approx(expected, abs=2e-4)


def test_prefix_sharing_and_batching_change_nothing(tiny):
    model, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, LABELS, conversations()[0])
    outcomes = []
    for share, batch_size in [(False, 1), (True, 1), (True, 3), (True, 16)]:
        predictor = Predictor(model, tokenizer, batch_size=batch_size, share_prefix=share)
        prompts = predictor.encode(conversations())
        assert share is False or common_prefix_length(prompts) >= 4  # the system prompt
        outcomes.append(
            (
                predictor.score_labels(prompts, label_set),
                predictor.classify_constrained(prompts, label_set),
                predictor.generate(prompts, 12),
            )
        )
    reference_scores, reference_labels, reference_texts = outcomes[0]
    for scores, constrained, generated in outcomes[1:]:
        torch.testing.assert_close(
            torch.tensor(scores), torch.tensor(reference_scores), atol=2e-4, rtol=0
        )
        assert [p.label for p in constrained] == [p.label for p in reference_labels]
        for got, ref in zip(constrained, reference_labels, strict=True):
            assert got.confidence == pytest.approx(ref.confidence, abs=1e-4)
        assert [g.token_ids for g in generated] == [g.token_ids for g in reference_texts]


def test_constrained_decoding_always_gives_a_valid_label(tiny):
    model, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, LABELS, conversations()[0])
    predictor = Predictor(model, tokenizer, batch_size=4)
    prompts = predictor.encode(conversations())
    found = predictor.classify_constrained(prompts, label_set)
    assert len(found) == len(prompts)
    for prediction in found:
        assert 0 <= prediction.label < len(LABELS)
        assert 0.0 < prediction.confidence <= 1.0
    # A random model's free generation is not a label; the constrained one always is.
    free = predictor.generate(prompts, label_set.longest + 4)
    assert any(g.text not in LABELS for g in free)


def test_constrained_equals_exact_when_the_first_token_decides(tiny):
    """One-token labels (+ the turn end): the trie's only choice is the first token. Exact
    scoring must agree wherever the first-token margin exceeds the spread of the end-token
    scores, and everywhere once one label's first token is made decisive."""
    model, tokenizer = tiny
    vocab = tokenizer.get_vocab()
    singles = [t for t in ("a", "b", "c", "d", "e", "f") if t in vocab][:4]
    assert len(singles) >= 3
    label_set = LabelSet.build(tokenizer, singles, conversations()[0])
    assert all(len(seq) == 2 for seq in label_set.sequences)  # one token + the turn end
    predictor = Predictor(model, tokenizer, batch_size=4)
    prompts = predictor.encode(conversations())
    constrained = predictor.classify_constrained(prompts, label_set)
    exact = predictor.classify_exact(prompts, label_set)
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
            first = torch.log_softmax(logits, -1)[[seq[0] for seq in label_set.sequences]]
            assert constrained[i].label == int(torch.argmax(first))  # the trie's greedy choice
            allowed = torch.softmax(first, -1)
            assert constrained[i].confidence == pytest.approx(float(allowed.max()), abs=1e-5)
            total = torch.tensor(brute_force_scores(model, prompt, label_set))
            rest = total - first
            top2 = torch.topk(first, 2).values
            if top2[0] - top2[1] > rest.max() - rest.min():
                assert exact[i].label == constrained[i].label
            assert exact[i].label == int(torch.argmax(total))
    # A decisive case by construction: a large bias on one label's first token.
    bias = torch.zeros(model.get_output_embeddings().weight.shape[0])
    bias[label_set.sequences[2][0]] = 50.0
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, out: out + bias)
    try:
        constrained = predictor.classify_constrained(prompts, label_set)
        exact = predictor.classify_exact(prompts, label_set)
    finally:
        handle.remove()
    assert [p.label for p in constrained] == [2] * len(prompts)
    assert [p.label for p in exact] == [2] * len(prompts)
    assert all(p.confidence > 0.99 for p in constrained)


def test_greedy_generation_matches_transformers_generate(tiny):
    model, tokenizer = tiny
    predictor = Predictor(model, tokenizer, batch_size=3)
    prompts = predictor.encode(conversations())
    generated = predictor.generate(prompts, 10)
    for prompt, ours in zip(prompts, generated, strict=True):
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=10,
                do_sample=False,
            )
        assert ours.token_ids == out[0, len(prompt) :].tolist()
        assert 0.0 < ours.confidence <= 1.0


def test_sampling_is_seeded(tiny):
    model, tokenizer = tiny
    predictor = Predictor(model, tokenizer, batch_size=4)
    prompts = predictor.encode(conversations())
    first = predictor.generate(prompts, 8, sampling=Sampling(), seed=1)
    again = predictor.generate(prompts, 8, sampling=Sampling(), seed=1)
    other = predictor.generate(prompts, 8, sampling=Sampling(), seed=2)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]


def test_prompt_tuning_recomputes_sequences_and_matches_brute_force(tmp_path):
    from tuneforge.models.adapters import attach_method

    directory = build_tiny_causal_lm(tmp_path / "m", "llama")
    model, tokenizer, _ = load_model(ModelConfig(name=str(directory)))
    model = attach_method(model, MethodConfig(kind="prompt_tuning", num_virtual_tokens=4))
    model.eval()
    predictor = Predictor(model, tokenizer, batch_size=4)
    assert not predictor.uses_cache
    prompts = predictor.encode(conversations())
    label_set = LabelSet.build(tokenizer, LABELS, conversations()[0])
    scores = predictor.score_labels(prompts, label_set)
    for i, prompt in enumerate(prompts):
        assert scores[i].tolist() == pytest.approx(
            brute_force_scores(model, prompt, label_set), abs=2e-4
        )
    labels = [p.label for p in predictor.classify_constrained(prompts, label_set)]
    singles = [[p.label for p in predictor.classify_constrained([q], label_set)] for q in prompts]
    assert labels == [s[0] for s in singles]
    batched = predictor.generate(prompts, 6)
    alone = [predictor.generate([q], 6)[0] for q in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


def test_helpers():
    assert common_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7]]) == 5
    assert common_prefix_length([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]]) == 4  # one own token left
    assert common_prefix_length([[1, 2, 9], [1, 2, 8]]) == 0  # below the minimum
    assert length_batches([3, 9, 5, 9], 2) == [[1, 3], [2, 0]]
    assert resolve_scoring("auto", 20) == "exact"
    assert resolve_scoring("auto", 21) == "constrained"


# Labels sharing first tokens, so most rows need decode steps after the prompt pass.
TRIE_LABELS = [
    "card arrival",
    "card delivery estimate",
    "card linking",
    "cash withdrawal charge",
    "cash withdrawal not recognised",
    "top up failed",
    "top up limits",
]


def test_pooled_trie_decoding_matches_batch_by_batch_with_fewer_forwards(tiny):
    """Rows left after several prompt batches decode together (caches of different lengths
    padded on the left): same labels and confidences as decoding each batch on its own, and as
    decoding each prompt alone; fewer forward calls where the cache can be concatenated."""
    from tuneforge.eval.decoding import CachedBatch

    model, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, TRIE_LABELS, conversations()[0])
    assert len(label_set.trie().children) < len(TRIE_LABELS)  # first tokens are shared
    prompts = Predictor(model, tokenizer).encode(conversations() * 3)  # 18 prompts
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        outcomes, forwards = [], []
        for batch_size, pool in [(1, 0), (2, 0), (2, 6), (2, 100), (3, 7)]:
            calls.clear()
            predictor = Predictor(model, tokenizer, batch_size=batch_size, decode_pool=pool)
            outcomes.append(predictor.classify_constrained(prompts, label_set))
            forwards.append(len(calls))
    finally:
        hook.remove()
    reference = outcomes[0]
    for found in outcomes[1:]:
        assert [p.label for p in found] == [p.label for p in reference]
        for got, ref in zip(found, reference, strict=True):
            assert got.confidence == pytest.approx(ref.confidence, abs=1e-4)
    with torch.no_grad():
        prefix = model(input_ids=torch.tensor([prompts[0][:4]]), use_cache=True)
        probe = CachedBatch.prefill(model, prompts[:2], 4, prefix.past_key_values, 0)
    if CachedBatch.has_plain_cache(probe):
        assert forwards[2] < forwards[1] and forwards[3] < forwards[2]
    else:  # sliding-window caches decode batch by batch
        assert forwards[2] == forwards[1]


def test_concatenated_batches_continue_like_each_batch(tiny):
    """`CachedBatch.concatenate` of two batches with different prompt widths: the next-token
    logits after feeding a token equal each batch's own."""
    from tuneforge.eval.decoding import CachedBatch

    model, tokenizer = tiny
    prompts = Predictor(model, tokenizer).encode(conversations())
    short, long = sorted(prompts, key=len)[:2], sorted(prompts, key=len)[-2:]
    with torch.no_grad():
        parts = [CachedBatch.prefill(model, seqs, 0, None, 0) for seqs in (short, long)]
        if not CachedBatch.has_plain_cache(parts[0]):
            pytest.skip("sliding-window cache: batches are not concatenated")
        assert parts[0].mask.shape[1] != parts[1].mask.shape[1]
        token = torch.tensor([5, 7])
        alone = [
            CachedBatch.prefill(model, seqs, 0, None, 0).advance(token) for seqs in (short, long)
        ]
        merged = CachedBatch.concatenate(parts).advance(torch.cat([token, token]))
    torch.testing.assert_close(merged, torch.cat(alone), atol=1e-4, rtol=0)


def full_softmax_predictions(predictor, prompts, label_set):
    scores = torch.tensor(predictor.score_labels(prompts, label_set))
    return scores.argmax(dim=1).tolist(), torch.softmax(scores, dim=1).max(dim=1).values.tolist()


@pytest.mark.parametrize(("batch_size", "exact_rows"), [(1, 96), (4, 96), (5, 2)])
def test_exact_classification_scores_only_labels_that_can_win(tiny, batch_size, exact_rows):
    """Branch and bound gives the argmax of every label's exact score (and row slicing of the
    packed continuations changes nothing); its confidence is at most the full softmax's."""
    model, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, TRIE_LABELS, conversations()[0])
    predictor = Predictor(model, tokenizer, batch_size=batch_size, exact_rows=exact_rows)
    prompts = predictor.encode(conversations() * 2)
    labels, confidences = full_softmax_predictions(predictor, prompts, label_set)
    found = predictor.classify_exact(prompts, label_set)
    assert [p.label for p in found] == labels
    for got, full in zip(found, confidences, strict=True):
        assert 0.0 < got.confidence <= full + 1e-6


def test_exact_classification_prunes_unlikely_first_tokens(tiny, monkeypatch):
    """One label's tokens made far likelier than any other: the labels under other first
    tokens are never scored, and the answer and its confidence match full scoring."""
    from tuneforge.eval import decoding

    model, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, TRIE_LABELS, conversations()[0])
    predictor = Predictor(model, tokenizer, batch_size=4)
    prompts = predictor.encode(conversations())
    bias = torch.zeros(model.get_output_embeddings().weight.shape[0])
    target = label_set.sequences[6]  # "top up limits"
    bias[target] = 80.0  # every token of it, so its continuation is likely too
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, out: out + bias)
    scored = []
    build = decoding.PackedContinuations.build.__func__

    def spy(cls, sequences, subsets=None):
        scored.extend(n for subset in (subsets or [range(len(sequences))]) for n in subset)
        return build(cls, sequences, subsets)

    try:
        labels, confidences = full_softmax_predictions(predictor, prompts, label_set)
        scored.clear()
        monkeypatch.setattr(decoding.PackedContinuations, "build", classmethod(spy))
        found = predictor.classify_exact(prompts, label_set)
    finally:
        handle.remove()
    assert [p.label for p in found] == labels
    if sliding_window(model) is None:  # (sliding-window models score every label)
        assert {label_set.labels[n] for n in scored} == {"top up failed", "top up limits"}
    for got, full in zip(found, confidences, strict=True):
        assert got.confidence == pytest.approx(full, abs=1e-4)


def test_exact_classification_without_cache_views_scores_every_label(tiny, monkeypatch):
    from tuneforge.eval.decoding import CachedBatch

    model, tokenizer = tiny
    label_set = LabelSet.build(tokenizer, TRIE_LABELS, conversations()[0])
    predictor = Predictor(model, tokenizer, batch_size=4)
    prompts = predictor.encode(conversations())
    labels, confidences = full_softmax_predictions(predictor, prompts, label_set)
    monkeypatch.setattr(CachedBatch, "has_plain_cache", staticmethod(lambda batch: False))
    found = predictor.classify_exact(prompts, label_set)
    assert [p.label for p in found] == labels
    assert [p.confidence for p in found] == pytest.approx(confidences, abs=1e-4)
