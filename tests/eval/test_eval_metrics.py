"""Metrics against scikit-learn and hand-worked values."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from tuneforge.eval.metrics import (
    classification_metrics,
    exact_match,
    flatten_json,
    flipped,
    generation_metrics,
    json_field_scores,
    lcs_length,
    normalize_text,
    rouge_l,
    token_f1,
    top_confusions,
    worst_examples,
)

GOLD = ["a", "a", "a", "b", "b", "c", "c", "c", "c", "d"]
PRED = ["a", "b", "a", "b", "a", "c", "c", "b", "x", "d"]  # "x" is outside the label set
LABELS = ["a", "b", "c", "d", "e"]  # "e" never occurs: excluded from the macro average


def test_classification_matches_sklearn():
    m = classification_metrics(GOLD, PRED, LABELS)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(accuracy_score(GOLD, PRED))
    present = [label for label in LABELS if label in GOLD or label in PRED]
    assert present == ["a", "b", "c", "d"]
    expected_macro = f1_score(GOLD, PRED, labels=present, average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(expected_macro)
    p, r, f, s = precision_recall_fscore_support(GOLD, PRED, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        got = m["per_class"][label]
        assert got["precision"] == pytest.approx(p[i])
        assert got["recall"] == pytest.approx(r[i])
        assert got["f1"] == pytest.approx(f[i])
        assert got["support"] == s[i]
    # hand check of class c: 4 gold, 2 right, predicted c twice (both right)
    assert m["per_class"]["c"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 4}


def test_classification_predicted_only_label_counts_in_macro():
    m = classification_metrics(["a", "a"], ["a", "b"], ["a", "b", "c"])
    # a: P=1 R=.5 F=2/3; b: predicted, never gold -> F=0; c: absent everywhere -> excluded
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["per_class"]["c"]["support"] == 0


def test_classification_empty_and_mismatch():
    assert classification_metrics([], [], ["a"])["n"] == 0
    with pytest.raises(ValueError, match="same length"):
        classification_metrics(["a"], [], ["a"])


def test_top_confusions():
    gold = ["a", "a", "a", "a", "b", "b", "c"]
    pred = ["b", "b", "c", "a", "a", "b", "a"]
    top = top_confusions(gold, pred, k=2)
    assert top[0] == {"gold": "a", "pred": "b", "count": 2, "share_of_gold": 0.5}
    # ties at count 1 break alphabetically by gold then pred: (a, c) before (b, a), (c, a)
    assert top[1] == {"gold": "a", "pred": "c", "count": 1, "share_of_gold": 0.25}
    assert len(top_confusions(gold, pred)) == 4


def test_flipped_and_worst():
    gold = ["a", "b", "c", "d"]
    a = ["a", "x", "c", "x"]
    b = ["x", "b", "c", "x"]
    assert flipped(gold, a, b) == {"fixed": [1], "broken": [0]}
    pred = ["x", "b", "x", "x"]
    assert worst_examples(gold, pred, [0.9, 0.99, 0.5, 0.95], k=2) == [3, 0]
    assert worst_examples(gold, pred, [None, 0.1, float("nan"), 0.2]) == [3, 0, 2]


def test_exact_match_normalises():
    assert normalize_text("  Hello \n\t World ") == "hello world"
    assert exact_match(["Paris", "Straße"], [" paris\n", "STRASSE"]) == 1.0
    assert exact_match(["a b", "x"], ["ab", "x"]) == 0.5


def test_token_f1_hand_worked():
    # ref tokens {the, cat, sat}, pred {the, cat, sat, down}: P=3/4 R=1 F1=6/7
    assert token_f1(["The cat sat."], ["the cat sat down"]) == pytest.approx(6 / 7)
    # multiplicity: ref "a a b", pred "a a a": overlap 2 -> P=2/3 R=2/3
    assert token_f1(["a a b"], ["a a a"]) == pytest.approx(2 / 3)
    # both empty agree; one empty scores 0; mean over examples
    assert token_f1(["", "x"], ["", ""]) == 0.5
    assert token_f1(["abc"], ["xyz"]) == 0.0


def test_rouge_l_hand_worked():
    assert lcs_length(["a", "b", "c", "d", "e"], ["a", "c", "e", "x"]) == 3
    assert lcs_length([], ["a"]) == 0
    # Lin's example: LCS("police killed the gunman", "the gunman police kill") is
    # "the gunman" (2 tokens); P = R = 2/4 -> F = 0.5
    ref = "police killed the gunman"
    pred = "the gunman police kill"
    assert rouge_l([ref], [pred]) == pytest.approx(0.5)
    # ref 5 tokens, pred 3 tokens, LCS 3 -> P=1, R=3/5, F=0.75
    assert rouge_l(["A B C D E"], ["a c e"]) == pytest.approx(0.75)
    assert rouge_l(["", "x"], ["", "y"]) == 0.5


def test_flatten_json_nested_and_lists():
    got = flatten_json({"a": {"b": 1.0, "c": " X  y"}, "l": [1, "two"], "n": None, "e": {}})
    assert got == {
        ("a.b", "1"),
        ("a.c", "x y"),
        ("l.0", "1"),
        ("l.1", "two"),
        ("n", "null"),
        ("e", "{}"),
    }
    assert flatten_json({}) == set()
    assert flatten_json({"t": True, "q": "42"}) == {("t", "true"), ("q", "42")}


def test_json_field_scores_hand_worked():
    refs = [
        '{"name": "Ada", "age": 36, "addr": {"city": "London"}}',  # 3 fields
        '{"name": "Bob", "age": 5}',  # 2 fields
        '{"x": 1}',  # 1 field
        "not json ref",  # not an object: left out of field counts
    ]
    preds = [
        '{"name": "ada", "age": "36", "addr": {"city": "Paris"}}',  # 2 tp of 3 pred
        '{"name": "Bob", "age": 5, "extra": true}',  # 2 tp of 3 pred
        '{"x": 1',  # invalid: 0 tp, 0 pred fields, its 1 ref field is missed
        "[1, 2]",  # valid JSON but not an object -> invalid
    ]
    s = json_field_scores(refs, preds)
    assert s["valid_rate"] == 0.5
    assert s["n_scored"] == 3
    assert s["field_precision"] == pytest.approx(4 / 6)
    assert s["field_recall"] == pytest.approx(4 / 6)
    assert s["field_f1"] == pytest.approx(4 / 6)
    none = json_field_scores(['{"a": 1}'], ["garbage"])
    assert none == {
        "valid_rate": 0.0,
        "field_precision": 0.0,
        "field_recall": 0.0,
        "field_f1": 0.0,
        "n_scored": 1,
    }


def test_generation_metrics_adds_json_only_for_json_refs():
    free = generation_metrics(["the cat", "a dog"], ["the cat", "dog"])
    assert free["json"] is None
    assert free["exact_match"] == 0.5
    assert free["token_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert free["n"] == 2
    structured = generation_metrics(['{"a": 1}', '{"a": 2}', "x"], ['{"a": 1}', "{}", "x"])
    assert structured["json"]["field_f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert not math.isnan(structured["rouge_l"])


def test_random_labels_against_sklearn():
    rng = np.random.default_rng(3)
    labels = [f"l{i}" for i in range(12)]
    gold = [labels[i] for i in rng.integers(0, 10, 400)]
    pred = [labels[i] for i in rng.integers(0, 12, 400)]
    m = classification_metrics(gold, pred, labels)
    present = sorted(set(gold) | set(pred))
    assert m["macro_f1"] == pytest.approx(
        f1_score(gold, pred, labels=present, average="macro", zero_division=0)
    )
