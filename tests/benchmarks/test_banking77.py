"""The pure parts of benchmarks/banking77.py: label wording, per-class subsampling, rewording."""

from __future__ import annotations

import pytest
from benchmark_module import load_benchmark

b77 = load_benchmark("banking77")


def _rows(counts: dict[str, int]) -> list[dict]:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append(
                {
                    "messages": [
                        {"role": "system", "content": "old"},
                        {"role": "user", "content": f"{label} {i}"},
                        {"role": "assistant", "content": label},
                    ],
                    "label": label,
                    "text": f"{label} {i}",
                }
            )
    return rows


def test_readable_label_words():
    assert b77.readable_label("card_arrival") == "card arrival"
    assert b77.readable_label("Refund_not_showing_up") == "refund not showing up"


def test_label_mapping_is_one_to_one_and_rejects_merges():
    mapping = b77.label_mapping(["b_x", "a_y", "a_y"], "readable")
    assert mapping == {"a_y": "a y", "b_x": "b x"}
    assert b77.label_mapping(["a_y"], "raw") == {"a_y": "a_y"}
    with pytest.raises(ValueError, match="merges"):
        b77.label_mapping(["a_b", "A_b"], "readable")
    with pytest.raises(ValueError, match="unknown"):
        b77.label_mapping(["a"], "pretty")


def test_subsample_per_class_counts_order_seed_and_nesting():
    rows = _rows({"a": 30, "b": 5, "c": 12})
    ten = b77.subsample_per_class(rows, 10, seed=0)
    counts = {label: sum(r["label"] == label for r in ten) for label in "abc"}
    assert counts == {"a": 10, "b": 5, "c": 10}  # a rare label keeps all it has
    positions = [rows.index(r) for r in ten]
    assert positions == sorted(positions)  # file order kept
    assert ten == b77.subsample_per_class(rows, 10, seed=0)  # seeded
    assert ten != b77.subsample_per_class(rows, 10, seed=1)
    twenty = b77.subsample_per_class(rows, 20, seed=0)
    assert all(r in twenty for r in ten)  # nested
    assert b77.subsample_per_class(rows, None, seed=0) == rows
    with pytest.raises(ValueError):
        b77.subsample_per_class(rows, 0, seed=0)


def test_subsample_does_not_depend_on_other_labels():
    alone = b77.subsample_per_class(_rows({"a": 30}), 5, seed=3)
    mixed = b77.subsample_per_class(_rows({"a": 30, "z": 9}), 5, seed=3)
    assert [r for r in mixed if r["label"] == "a"] == alone


def test_reword_row_sets_label_answer_and_system():
    row = _rows({"card_arrival": 1})[0]
    out = b77.reword_row(row, {"card_arrival": "card arrival"}, "sys")
    assert out["label"] == "card arrival"
    assert out["messages"][0] == {"role": "system", "content": "sys"}
    assert out["messages"][-1] == {"role": "assistant", "content": "card arrival"}
    assert row["messages"][-1]["content"] == "card_arrival"  # input untouched
    bare = b77.reword_row(row, {"card_arrival": "card_arrival"}, None)
    assert [m["role"] for m in bare["messages"]] == ["user", "assistant"]


def test_parse_per_class_and_pair_confusions():
    assert b77.parse_per_class("full") is None
    assert b77.parse_per_class("10") == 10
    gold = ["x", "y", "x", "y", "x"]
    pred = ["y", "x", "y", "y", "x"]
    assert b77.pair_confusions(gold, pred, "x", "y") == {"x->y": 2, "y->x": 1}
