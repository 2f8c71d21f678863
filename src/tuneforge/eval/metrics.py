"""Metrics that answer "is the fine-tune better?" — pure functions on plain Python lists.

Classification metrics come from scikit-learn so they match what users compute themselves;
generation metrics (exact match, SQuAD token F1, ROUGE-L, JSON field scores) are small enough
to implement here without pulling in an extra dependency, and each is defined in its docstring
so a number in a report can be traced back to a formula.

Every aggregate has a per-example twin (``*_scores``) because confidence intervals are
bootstrapped over examples (see :mod:`tuneforge.eval.stats`).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = [
    "classification_metrics",
    "exact_match",
    "exact_match_scores",
    "flatten_json",
    "flipped",
    "generation_metrics",
    "json_field_scores",
    "lcs_length",
    "macro_f1",
    "normalize_text",
    "rouge_l",
    "rouge_l_scores",
    "token_f1",
    "token_f1_scores",
    "top_confusions",
    "worst_examples",
]

_WS = re.compile(r"\s+")


def _check_same_length(**seqs: Sequence[Any]) -> int:
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"sequences must have the same length ({detail})")
    return next(iter(lengths.values()), 0)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


# --------------------------------------------------------------------------- classification


def classification_metrics(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support.

    Per-class numbers are scikit-learn's ``precision_recall_fscore_support(labels=labels,
    zero_division=0)``; a prediction outside ``labels`` (an invalid generation) is simply wrong:
    it lowers accuracy and the recall of its gold class, and belongs to no class's precision.

    Macro-F1 averages over the labels that occur in ``gold`` *or* in ``pred``. Why: a label that
    neither occurs in the test set nor is ever predicted has an undefined F1 (0/0), and counting it
    as 0 (sklearn's default when ``labels=`` lists it) would punish every model for the test split
    missing a rare class. A label that is predicted but absent from gold keeps its F1 of 0, so
    hallucinating a class still costs. This equals
    ``f1_score(gold, pred, labels=[l for l in labels if l in gold or l in pred], average="macro",
    zero_division=0)``.
    """
    from sklearn.metrics import precision_recall_fscore_support

    n = _check_same_length(gold=gold, pred=pred)
    labels = list(dict.fromkeys(labels))
    per_class: dict[str, dict[str, float | int]] = {}
    if n == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0, "per_class": per_class, "n": 0}
    if labels:
        p, r, f, s = precision_recall_fscore_support(
            list(gold), list(pred), labels=labels, zero_division=0
        )
        for i, label in enumerate(labels):
            per_class[label] = {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
            }
    accuracy = sum(g == q for g, q in zip(gold, pred, strict=True)) / n
    present = set(gold) | set(pred)
    f1s = [v["f1"] for label, v in per_class.items() if label in present]
    return {
        "accuracy": float(accuracy),
        "macro_f1": _mean(f1s),
        "per_class": per_class,
        "n": n,
    }


def macro_f1(gold: list[str], pred: list[str], labels: list[str]) -> float:
    """Macro-F1 alone (same definition as :func:`classification_metrics`), for bootstrapping."""
    return float(classification_metrics(gold, pred, labels)["macro_f1"])


def top_confusions(gold: list[str], pred: list[str], k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` most frequent (gold, predicted) pairs with gold ≠ predicted.

    ``share_of_gold`` is the pair's count over the gold label's support, i.e. which fraction of
    that class goes astray this particular way — what tells a user which two intents to merge or
    to give more examples. Ties are broken alphabetically so reports are reproducible.
    """
    _check_same_length(gold=gold, pred=pred)
    support = Counter(gold)
    pairs = Counter((g, q) for g, q in zip(gold, pred, strict=True) if g != q)
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0][0], item[0][1]))
    return [
        {"gold": g, "pred": q, "count": count, "share_of_gold": count / support[g]}
        for (g, q), count in ranked[: max(k, 0)]
    ]


def flipped(gold: list[str], pred_a: list[str], pred_b: list[str]) -> dict[str, list[int]]:
    """Examples whose correctness changes from model ``a`` to model ``b``.

    ``fixed``: a wrong, b right; ``broken``: a right, b wrong. Reading both lists (not just the net
    accuracy change) shows whether a fine-tune learned the task or traded one set of errors for
    another.
    """
    _check_same_length(gold=gold, pred_a=pred_a, pred_b=pred_b)
    fixed, broken = [], []
    for i, (g, a, b) in enumerate(zip(gold, pred_a, pred_b, strict=True)):
        if a != g and b == g:
            fixed.append(i)
        elif a == g and b != g:
            broken.append(i)
    return {"fixed": fixed, "broken": broken}


def worst_examples(
    gold: list[str], pred: list[str], confidence: Sequence[float | None], k: int = 10
) -> list[int]:
    """Indices of wrong predictions, most confident first (confidently wrong = most telling).

    Such examples are often label noise or genuinely ambiguous classes rather than model
    weakness. A missing (``None``/NaN) confidence sorts last; ties keep index order.
    """
    _check_same_length(gold=gold, pred=pred, confidence=confidence)

    def key(i: int) -> tuple[float, int]:
        c = confidence[i]
        if c is None or (isinstance(c, float) and math.isnan(c)):
            return (math.inf, i)
        return (-float(c), i)

    wrong = [i for i, (g, q) in enumerate(zip(gold, pred, strict=True)) if g != q]
    return sorted(wrong, key=key)[: max(k, 0)]


# --------------------------------------------------------------------------- generation


def normalize_text(text: str) -> str:
    """Strip, collapse runs of whitespace to one space, casefold.

    Used by every generation metric so that "Paris" and " paris\\n" count as the same answer:
    the report should measure content, not formatting noise.
    """
    return _WS.sub(" ", text).strip().casefold()


def _squad_tokens(text: str) -> list[str]:
    # SQuAD-style: normalise, delete punctuation, split on whitespace. Unlike the SQuAD script we
    # do not drop English articles (a/an/the): tuneforge data is not necessarily English.
    text = normalize_text(text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return text.split()


def exact_match_scores(refs: list[str], preds: list[str]) -> list[float]:
    """Per example 1.0 if ``normalize_text(ref) == normalize_text(pred)`` else 0.0."""
    _check_same_length(refs=refs, preds=preds)
    return [float(normalize_text(r) == normalize_text(p)) for r, p in zip(refs, preds, strict=True)]


def exact_match(refs: list[str], preds: list[str]) -> float:
    """Share of predictions equal to the reference after :func:`normalize_text`."""
    return _mean(exact_match_scores(refs, preds))


def _f1_from_overlap(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def token_f1_scores(refs: list[str], preds: list[str]) -> list[float]:
    """Per-example SQuAD bag-of-tokens F1 (see :func:`token_f1`)."""
    _check_same_length(refs=refs, preds=preds)
    scores = []
    for r, p in zip(refs, preds, strict=True):
        rt, pt = _squad_tokens(r), _squad_tokens(p)
        if not rt or not pt:
            scores.append(float(rt == pt))  # both empty: agree; one empty: 0
            continue
        overlap = sum((Counter(rt) & Counter(pt)).values())
        scores.append(_f1_from_overlap(overlap, len(pt), len(rt)))
    return scores


def token_f1(refs: list[str], preds: list[str]) -> float:
    """Mean SQuAD-style token F1: bag-of-tokens overlap between reference and prediction.

    Tokens: :func:`normalize_text`, punctuation deleted, split on whitespace (articles are kept,
    unlike SQuAD, to stay language-neutral). Per example ``F1 = 2PR/(P+R)`` with
    ``P = overlap/len(pred)``, ``R = overlap/len(ref)`` and overlap counted with multiplicity;
    two empty strings score 1, one empty string scores 0. Gives partial credit that exact match
    cannot, which matters for free-text answers.
    """
    return _mean(token_f1_scores(refs, preds))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (classic O(len(a)·len(b)) DP, two rows)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l_scores(refs: list[str], preds: list[str]) -> list[float]:
    """Per-example ROUGE-L F-measure (see :func:`rouge_l`)."""
    _check_same_length(refs=refs, preds=preds)
    scores = []
    for r, p in zip(refs, preds, strict=True):
        rt, pt = normalize_text(r).split(), normalize_text(p).split()
        if not rt or not pt:
            scores.append(float(rt == pt))
            continue
        scores.append(_f1_from_overlap(lcs_length(rt, pt), len(pt), len(rt)))
    return scores


def rouge_l(refs: list[str], preds: list[str]) -> float:
    """Mean ROUGE-L F-measure over whitespace tokens.

    Definition: tokens are ``normalize_text(s).split()`` (punctuation kept, unlike token F1, so it
    is a stricter view of the same answer); ``LCS`` is the longest common subsequence of the two
    token lists; ``P = LCS/len(pred)``, ``R = LCS/len(ref)``, ``F = 2PR/(P+R)`` — the β = 1
    F-measure used by Google's ``rouge-score`` package (Lin 2004 allows other β). Two empty
    strings score 1, one empty string 0. Rewards word order, which bag-of-tokens F1 ignores.
    """
    return _mean(rouge_l_scores(refs, preds))


def _parse_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text.strip())
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _norm_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return normalize_text(value)
    return json.dumps(value, sort_keys=True)  # empty dict / list leaves


def flatten_json(obj: Any, prefix: str = "") -> set[tuple[str, str]]:
    """(dotted key, normalised value) pairs of a JSON value.

    Nested objects give dotted keys (``{"a": {"b": 1}}`` → ``("a.b", "1")``); lists are indexed
    (``{"x": [1, 2]}`` → ``("x.0", "1"), ("x.1", "2")``). Values are normalised so that
    formatting does not count as an error: strings with :func:`normalize_text`, numbers
    canonically (``1.0`` == ``1``), and a number equals its string form (``"42"`` == ``42``),
    because extraction models often quote numbers.
    """
    items: set[tuple[str, str]] = set()
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            items |= flatten_json(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list) and obj:
        for i, value in enumerate(obj):
            items |= flatten_json(value, f"{prefix}.{i}" if prefix else str(i))
    elif prefix:  # a leaf; an empty top-level object has no fields at all
        items.add((prefix, _norm_value(obj)))
    return items


def json_field_scores(refs: list[str], preds: list[str]) -> dict[str, Any]:
    """How well structured (JSON) outputs reproduce the reference fields.

    - ``valid_rate``: share of ``preds`` that parse (whole string, surrounding whitespace
      allowed, no code fences) as a JSON *object*.
    - ``field_precision/recall/f1``: micro-averaged over all examples whose reference is a JSON
      object, where a field is a (dotted key, normalised value) pair from :func:`flatten_json`.
      An invalid prediction contributes zero true positives and zero predicted fields, so it
      lowers recall (its reference fields are all missed) but not precision; ``valid_rate``
      reports it separately. Examples whose reference is not an object are left out of the field
      counts (``n_scored`` says how many were counted).

    Per-field scoring gives credit for 4 of 5 fields right, which exact match on the whole string
    would score as a plain failure.
    """
    n = _check_same_length(refs=refs, preds=preds)
    valid = tp = n_pred = n_ref = scored = 0
    for r, p in zip(refs, preds, strict=True):
        pred_obj = _parse_object(p)
        valid += pred_obj is not None
        ref_obj = _parse_object(r)
        if ref_obj is None:
            continue
        scored += 1
        ref_fields = flatten_json(ref_obj)
        pred_fields = flatten_json(pred_obj) if pred_obj is not None else set()
        tp += len(ref_fields & pred_fields)
        n_pred += len(pred_fields)
        n_ref += len(ref_fields)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "valid_rate": valid / n if n else 0.0,
        "field_precision": precision,
        "field_recall": recall,
        "field_f1": f1,
        "n_scored": scored,
    }


def generation_metrics(refs: list[str], preds: list[str]) -> dict[str, Any]:
    """Exact match, token F1 and ROUGE-L, plus JSON field scores when the task is structured.

    ``json`` is filled when more than half of ``refs`` parse as JSON objects (an extraction
    task), else ``None``.
    """
    n = _check_same_length(refs=refs, preds=preds)
    n_json = sum(_parse_object(r) is not None for r in refs)
    return {
        "exact_match": exact_match(refs, preds),
        "token_f1": token_f1(refs, preds),
        "rouge_l": rouge_l(refs, preds),
        "json": json_field_scores(refs, preds) if n and n_json * 2 > n else None,
        "n": n,
    }
