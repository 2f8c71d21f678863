"""Verdict wording, the three report files, and the figures they embed."""

import base64
import json
import re
import struct

import pytest

from tuneforge.eval.plots import comparison_bar_png, confusion_matrix_png, order_labels
from tuneforge.eval.report import write_report
from tuneforge.eval.verdict import primary_metric, verdict

LABELS = ["balance", "card_lost", "refund", "transfer"]


def _variant(acc, ci, prompt_tokens=40.0, **extra):
    return {
        "accuracy": acc,
        "accuracy_ci": list(ci),
        "macro_f1": acc - 0.02,
        "macro_f1_ci": [ci[0] - 0.02, ci[1] - 0.02],
        "per_class": {
            label: {"precision": 0.8, "recall": 0.7, "f1": 0.75 - i / 10, "support": 25}
            for i, label in enumerate(LABELS)
        },
        "invalid_rate": 0.0,
        "free_generation_exact_match": None,
        "prompt_tokens": prompt_tokens,
        "output_variation": None,
        "seconds": 1.5,
        **extra,
    }


def _comparison(diff, lo, hi, p, a_only=5, b_only=40):
    return {
        "metric": "accuracy",
        "mcnemar": {"a_only": a_only, "b_only": b_only, "p_value": p, "method": "chi2"},
        "difference": {"diff": diff, "lo": lo, "hi": hi},
    }


def _example(i, gold="refund", pred="transfer", other="refund"):
    return {"index": i, "text": f"text | {i}\nline two", "gold": gold, "pred": pred,
            "other_pred": other, "confidence": 0.9}  # fmt: skip


def _results(**overrides):
    results = {
        "task": "classification",
        "run": "runs/demo",
        "n": 100,
        "labels": LABELS,
        "variants": {
            "tuned": _variant(0.86, (0.79, 0.92), prompt_tokens=20.0),
            "base_zero": _variant(0.30, (0.21, 0.39), prompt_tokens=60.0),
            "base_fewshot": _variant(0.55, (0.45, 0.65), prompt_tokens=182.0),
        },
        "comparisons": {
            "base_zero": _comparison(0.56, 0.46, 0.66, 1e-12),
            "base_fewshot": _comparison(0.31, 0.281, 0.34, 2e-6),
        },
        "confusions": [{"gold": "refund", "pred": "transfer", "count": 4, "share_of_gold": 0.16}],
        "flipped": {"vs": "base_fewshot", "fixed": [_example(1)], "broken": [_example(2)]},
        "worst": [_example(3)],
        "perplexity": {"answer": 1.23, "sequence": 4.56},
        "forgetting": {"base": {"score": 0.5, "n": 50}, "tuned": {"score": 0.48, "n": 50}},
        "prompts": [{"prompt": "What is 2+2?", "base": "4", "tuned": "refund"}],
    }
    results.update(overrides)
    return results


def test_verdict_win():
    text = verdict(_results())
    assert text.startswith("tuned beats base_fewshot by 31.0 points")
    assert "95 % CI 28.1–34.0" in text
    assert "McNemar p < 0.001" in text
    assert "prompt 9.1× shorter" in text
    assert "fine-tuning is worth it here" in text


def test_verdict_loss_to_prompting():
    results = _results()
    results["variants"]["base_fewshot"]["accuracy"] = 0.95
    results["comparisons"]["base_fewshot"] = _comparison(-0.09, -0.14, -0.04, 0.002, 12, 3)
    text = verdict(results)
    assert text.startswith("base_fewshot beats tuned by 9.0 points")
    assert "McNemar p = 0.002" in text
    assert "not worth it" in text


def test_verdict_classic_matches():
    results = _results()
    results["variants"]["classic"] = _variant(0.88, (0.81, 0.93), prompt_tokens=0.0)
    results["comparisons"]["classic"] = _comparison(-0.02, -0.06, 0.02, 0.62, 9, 8)
    text = verdict(results)
    assert text.startswith("the embedding classifier (classic) matches or beats the fine-tune")
    assert "p = 0.62" in text
    assert "fine-tuning is not worth its cost here" in text


def test_verdict_tuned_leads_classic_within_noise():
    """A lead that is not significant is named as a lead, not as the classifier winning."""
    results = _results()
    results["variants"]["classic"] = _variant(0.85, (0.78, 0.91), prompt_tokens=0.0)
    results["comparisons"]["classic"] = _comparison(0.01, -0.03, 0.05, 0.62, 8, 9)
    text = verdict(results)
    assert text.startswith("tuned leads the embedding classifier (classic) by 1.0 points")
    assert "within noise (95 % CI −3.0–5.0, McNemar p = 0.62)" in text
    assert "only if a larger test set confirms the lead" in text


def test_verdict_inconclusive():
    results = _results()
    results["variants"]["base_fewshot"]["accuracy"] = 0.84
    results["comparisons"]["base_fewshot"] = _comparison(0.02, -0.03, 0.07, 0.41, 10, 12)
    text = verdict(results)
    assert text.startswith("inconclusive: difference within noise (p = 0.41)")


def test_verdict_without_paired_test_uses_interval():
    results = _results()
    del results["comparisons"]
    # marginal CIs 0.79-0.92 vs 0.45-0.65 do not overlap: a win even without McNemar
    assert verdict(results).startswith("tuned beats base_fewshot by 31.0 points")


def test_verdict_missing_tuned_or_baselines():
    results = _results()
    del results["variants"]["tuned"]
    text = verdict(results)
    assert text.startswith("no fine-tuned model was evaluated")
    assert "base_fewshot" in text
    results = _results(variants={"tuned": _variant(0.86, (0.79, 0.92))}, comparisons={})
    text = verdict(results)
    assert text.startswith("only the fine-tune was evaluated")
    assert "86.0 %" in text
    assert verdict(_results(variants={})).startswith("nothing to compare")


def test_verdict_notes_forgetting_and_invalid():
    results = _results()
    results["forgetting"]["tuned"]["score"] = 0.30
    results["forgetting"]["lost"] = [f"fact-{i:02d}" for i in range(10)]
    results["forgetting"]["gained"] = []
    results["variants"]["tuned"]["invalid_rate"] = 0.1
    text = verdict(results)
    assert "lost 20.0 points on the general-knowledge set (p = 0.002)" in text  # 2 / 2**10
    assert "10.0 % of the tuned model's outputs are invalid" in text


def test_verdict_generation_uses_token_or_field_f1():
    gen = {
        "tuned": {"token_f1": 0.8, "token_f1_ci": [0.7, 0.9], "json": None, "prompt_tokens": 10},
        "base_zero": {"token_f1": 0.4, "token_f1_ci": [0.3, 0.5], "json": None},
    }
    results = {"task": "generation", "n": 50, "variants": gen, "comparisons": {}}
    assert primary_metric(results) == ("token_f1", "token F1")
    assert verdict(results).startswith("tuned beats base_zero by 40.0 points")
    gen["tuned"]["json"] = {"field_f1": 0.5, "field_f1_ci": [0.4, 0.6]}
    gen["base_zero"]["json"] = {"field_f1": 0.52, "field_f1_ci": [0.42, 0.62]}
    assert primary_metric(results)[0] == "field_f1"
    assert verdict(results).startswith("inconclusive")
    # comparisons computed on another metric win, so every number describes one metric
    results["comparisons"] = {"base_zero": {"metric": "exact_match"}}
    assert primary_metric(results) == ("exact_match", "exact match")


def _png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_write_report_three_files_with_embedded_image(tmp_path):
    results = _results()
    bar = comparison_bar_png(
        {name: (v["accuracy"], *v["accuracy_ci"]) for name, v in results["variants"].items()},
        tmp_path / "out" / "comparison.png",
        "accuracy",
    )
    out = tmp_path / "out"
    write_report(out, results, {"comparison": bar})
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.png",
        "metrics.json",
        "report.html",
        "report.md",
    ]
    assert json.loads((out / "metrics.json").read_text()) == results
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    text = verdict(results)
    assert f"**Verdict:** {text}" in md
    assert "tuned beats base_fewshot by 31.0 points" in html
    assert "![comparison](comparison.png)" in md
    for heading in ("Variants", "Per class", "Top confusions", "Flipped", "Most confident",
                    "Perplexity", "Forgetting", "Prompts side by side"):  # fmt: skip
        assert heading in md and heading in html
    assert "text \\| 1 ⏎ line two" in md  # table cells escaped, one line each
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match and base64.b64decode(match.group(1)) == bar.read_bytes()
    assert "http://" not in html and "https://" not in html  # no external assets
    assert not list(out.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("sampled", "says"),
    [(None, "every example"), (128, "a seeded sample of 128 of the 1000 examples")],
)
def test_report_says_which_examples_the_sequence_perplexity_covers(tmp_path, sampled, says):
    results = _results(n=1000, perplexity_sequence_rows=sampled)
    write_report(tmp_path, results, {})
    assert says in (tmp_path / "report.md").read_text()


def test_write_report_serialises_numpy_and_nan(tmp_path):
    np = pytest.importorskip("numpy")
    results = _results()
    results["variants"]["tuned"]["seconds"] = np.float32(2.5)
    results["variants"]["tuned"]["output_variation"] = float("nan")
    write_report(tmp_path, results, {})
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["variants"]["tuned"]["seconds"] == 2.5
    assert data["variants"]["tuned"]["output_variation"] is None


def test_confusion_png_77_labels(tmp_path):
    labels = [f"intent_number_{i:02d}_{'x' * (i % 20)}" for i in range(77)]
    gold = [labels[i % 77] for i in range(400)]
    pred = [labels[(i + (i % 5 == 0)) % 77] for i in range(400)]
    pred[0] = "not a label"
    path = confusion_matrix_png(gold, pred, labels, tmp_path / "cm.png", title="77")
    width, height = _png_size(path)
    assert width > 1500 and height > 1500  # big enough for 77 legible tick labels
    assert path.stat().st_size < 2_000_000
    small = confusion_matrix_png(gold[:40], pred[:40], labels[:5], tmp_path / "cm5.png")
    assert max(_png_size(small)) < max(width, height)
    order = order_labels(gold, pred, labels)
    assert sorted(order) == sorted(labels)
    # clustering puts each class next to the one it is confused with
    i = order.index(labels[10])
    assert labels[11] in order[max(0, i - 1) : i + 2] or labels[9] in order[max(0, i - 1) : i + 2]


def test_write_report_generation(tmp_path):
    variant = {
        "exact_match": 0.4,
        "exact_match_ci": [0.3, 0.5],
        "token_f1": 0.7,
        "token_f1_ci": [0.6, 0.8],
        "rouge_l": 0.65,
        "json": {"valid_rate": 0.9, "field_precision": 0.8, "field_recall": 0.7, "field_f1": 0.75},
        "prompt_tokens": 30.0,
        "seconds": 2.0,
    }
    results = {
        "task": "generation",
        "run": "runs/extract",
        "n": 20,
        "labels": None,
        "variants": {"tuned": variant, "base_zero": {**variant, "json": None, "token_f1": 0.2}},
        "comparisons": {},
        "confusions": [],
        "flipped": None,
        "worst": [],
        "perplexity": None,
        "forgetting": None,
        "prompts": None,
    }
    write_report(tmp_path, results, {})
    md = (tmp_path / "report.md").read_text()
    assert "JSON field F1" in md and "ROUGE-L" in md and "90.0 %" in md
    assert "Per class" not in md
