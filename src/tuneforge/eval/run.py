"""`evaluate`: the fine-tune against its baselines on one test set, written as a report.

    check inputs (nothing loads before they pass) -> load the run -> tuned model: predictions,
    free generation, perplexity, forgetting, sample prompts, output variation -> base model
    (the adapter switched off in place, or loaded again after a full fine-tune): zero-shot,
    few-shot, retrieval few-shot, forgetting, prompts, variation -> classic classifier ->
    metrics, intervals, paired tests -> metrics.json, report.md/.html, plots, predictions.jsonl

Everything is written to a temp directory renamed into place at the end, so a failure leaves
no output directory, and an existing one is only replaced with `force`.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import TuneforgeError
from tuneforge.eval import baselines as bl
from tuneforge.models.trained import RunDir, inspect_run

Row = dict[str, Any]
Messages = list[dict[str, str]]

VARIANT_ORDER = ("tuned", "base_zero", "base_fewshot", "base_rag", "classic")
VARIATION_EXAMPLES = 50
VARIATION_SEEDS = (0, 1, 2)
DEFAULT_SHOTS = 8
GENERATION_TOKEN_CAP = 512
PROMPT_TOKENS_MAX = 256
WORST_K = 10


def default_out_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "eval"


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    run: RunDir
    data_path: Path
    rows: list[Row]
    gold: list[str]
    baselines: list[str]
    train_rows: list[Row]
    prompts: list[Messages]
    prompt_texts: list[str]
    out_dir: Path
    notes: list[str] = field(default_factory=list)


def _read_test_rows(path: Path, run: RunDir) -> tuple[list[Row], list[str]]:
    from tuneforge.train.data import read_split

    if not path.is_file():
        raise TuneforgeError(f"--data {path}: no such file")
    rows = read_split(path)
    if not rows:
        raise TuneforgeError(f"--data {path}: no examples in the file")
    for number, row in enumerate(rows, start=1):
        messages = row["messages"]
        last = messages[-1] if messages else None
        if (
            not isinstance(last, dict)
            or last.get("role") != "assistant"
            or not isinstance(last.get("content"), str)
            or len(messages) < 2
        ):
            raise TuneforgeError(
                f"{path}: example {number}: must end with the assistant's (reference) answer "
                "after at least one user turn; use a `tuneforge prepare` test.jsonl"
            )
    if run.labels is None:
        return rows, [row["messages"][-1]["content"] for row in rows]
    missing = [n for n, row in enumerate(rows, start=1) if not isinstance(row.get("label"), str)]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise TuneforgeError(
            f"{path}: {len(missing)} example(s) have no 'label' field (examples {shown}), but "
            f"{run.path} is a classification run; evaluate it on a `tuneforge prepare` test.jsonl "
            "of text+label data"
        )
    gold = [row["label"] for row in rows]
    unknown = sorted(set(gold) - set(run.labels))
    if unknown:
        raise TuneforgeError(
            f"{path}: label(s) not in the run's label set: {', '.join(map(repr, unknown[:10]))}"
            + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
            + f"; the run was trained on: {', '.join(run.labels[:20])}"
            + (" ..." if len(run.labels) > 20 else "")
        )
    return rows, gold


def _shared_system(rows: Sequence[Row]) -> str | None:
    systems = {
        row["messages"][0]["content"] if row["messages"][0].get("role") == "system" else None
        for row in rows
    }
    return systems.pop() if len(systems) == 1 else None


def _read_prompts(path: Path, system: str | None) -> tuple[list[Messages], list[str]]:
    """A prompts file: one prompt per line (plain text, or JSON {"prompt"} / {"messages"})."""
    if not path.is_file():
        raise TuneforgeError(f"--prompts {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TuneforgeError(f"--prompts {path}: not UTF-8 text") from None
    conversations, texts = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        value: Any = line
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TuneforgeError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
        if isinstance(value, dict) and isinstance(value.get("messages"), list):
            messages = value["messages"]
            if messages and messages[-1].get("role") == "assistant":
                messages = messages[:-1]
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        elif isinstance(value, dict) and isinstance(value.get("prompt"), str):
            text = value["prompt"]
            messages = [{"role": "user", "content": text}]
        elif isinstance(value, str):
            text = value.strip()
            messages = [{"role": "user", "content": text}]
        else:
            raise TuneforgeError(
                f"{path}:{number}: expected plain text, or JSON with 'prompt' or 'messages'"
            )
        if system and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": system}, *messages]
        conversations.append(messages)
        texts.append(text)
    if not conversations:
        raise TuneforgeError(f"--prompts {path}: no prompts in the file")
    return conversations, texts


def _plan(
    run_dir: str | Path,
    data_path: str | Path | None,
    out_dir: str | Path | None,
    baselines: Sequence[str],
    shots: int,
    prompts_file: str | Path | None,
    scoring: str,
    force: bool,
    limit: int | None,
) -> _Plan:
    from tuneforge.eval.predict import resolve_scoring
    from tuneforge.train.data import read_split

    run = inspect_run(run_dir)
    resolve_scoring(scoring, 1)  # checks the name
    unknown = [name for name in baselines if name not in bl.ALL_BASELINES]
    if unknown:
        raise TuneforgeError(f"unknown baseline(s): {', '.join(unknown)}")
    notes: list[str] = []
    names = list(dict.fromkeys(baselines))
    if run.task == "generation" and "classic" in names:
        names.remove("classic")
        notes.append("classic baseline: classification runs only; skipped")
    data_path = run.test_file(data_path, "to evaluate on")
    rows, gold = _read_test_rows(data_path, run)
    if limit is not None:
        if limit < 1:
            raise TuneforgeError(f"--limit must be at least 1 (got {limit})")
        keep = sample_indices(len(rows), limit)
        rows, gold = [rows[i] for i in keep], [gold[i] for i in keep]
    needs_train = [name for name in names if name in ("fewshot", "rag", "classic")]
    train_rows: list[Row] = []
    if needs_train:
        if {"fewshot", "rag"} & set(needs_train) and shots < 1:
            raise TuneforgeError(f"--shots must be at least 1 for fewshot/rag (got {shots})")
        train_path = run.data_dir / "train.jsonl" if run.data_dir is not None else None
        if train_path is None or not train_path.is_file():
            raise TuneforgeError(
                f"baselines {', '.join(needs_train)} need the run's training split, but "
                f"{Path(run.config.data.dir or '?') / 'train.jsonl'} is missing (config data.dir); "
                "restore it, or choose --baselines zero (or none)"
            )
        train_rows = read_split(train_path)
        if run.labels is not None:
            train_rows = [row for row in train_rows if isinstance(row.get("label"), str)]
        if not train_rows:
            raise TuneforgeError(f"{train_path}: no usable training examples for the baselines")
    prompts: list[Messages] = []
    prompt_texts: list[str] = []
    if prompts_file is not None:
        prompts, prompt_texts = _read_prompts(Path(prompts_file), _shared_system(rows))
    out = Path(out_dir) if out_dir is not None else default_out_dir(run.path)
    if out.exists() and not force:
        raise TuneforgeError(
            f"{out}: already exists; choose another -o or pass --force to replace it"
        )
    if out.exists() and not out.is_dir():
        raise TuneforgeError(f"{out}: exists and is not a directory")
    return _Plan(
        run, Path(data_path), rows, gold, names, train_rows, prompts, prompt_texts, out, notes
    )


# ---------------------------------------------------------------------------------------------
# running the model variants
# ---------------------------------------------------------------------------------------------


@dataclass
class _Variant:
    name: str
    pred: list[str]
    confidence: list[float | None]
    seconds: float
    prompt_tokens: float | None = None
    free: list[str] | None = None
    prompts: list[list[int]] | None = None
    """Encoded prompts (LM variants), for the output-variation check."""
    variation: float | None = None


def _conversations(kind: str, plan: _Plan, shots: int) -> list[Messages]:
    labels = plan.run.labels
    prompts = [row["messages"][:-1] for row in plan.rows]
    if kind == "tuned":
        return prompts
    if kind == "zero":
        return [bl.zero_shot(p, labels) for p in prompts]
    if kind == "fewshot":
        chosen = bl.stratified_shots(plan.train_rows, shots, seed=plan.run.config.train.seed)
        return [bl.with_examples(p, chosen, labels) for p in prompts]
    if kind == "rag":
        nearest = bl.retrieved_shots(plan.train_rows, plan.rows, shots)
        return [bl.with_examples(p, near, labels) for p, near in zip(prompts, nearest, strict=True)]
    raise TuneforgeError(f"internal: unknown prompt kind {kind!r}")


def sample_indices(n: int, limit: int, seed: int = 0) -> list[int]:
    """`limit` of `n` row indices, a seeded random sample kept in file order.

    Not the first `limit` rows: test files are often grouped by label, and their head would
    hold a handful of classes.
    """
    if limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


class _Runner:
    """Runs LM variants for one task; holds the label set and the decoding budgets."""

    def __init__(self, plan: _Plan, tokenizer: Any, scoring: str, batch_size: int) -> None:
        from tuneforge.eval.predict import LabelSet, resolve_scoring

        self.plan = plan
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.label_set = None
        self.scoring = None
        if plan.run.labels is not None:
            context = plan.rows[0]["messages"][:-1]
            self.label_set = LabelSet.build(tokenizer, plan.run.labels, context)
            self.scoring = resolve_scoring(scoring, len(plan.run.labels))
            self.max_new = self.label_set.longest + 4
        else:
            longest = max(
                len(tokenizer(ref, add_special_tokens=False)["input_ids"]) for ref in plan.gold
            )
            self.max_new = min(GENERATION_TOKEN_CAP, max(8, math.ceil(1.5 * (longest + 1))))

    def predictor(self, model: Any) -> Any:
        from tuneforge.eval.predict import Predictor

        return Predictor(model, self.tokenizer, batch_size=self.batch_size)

    def run(self, name: str, model: Any, conversations: list[Messages]) -> _Variant:
        predictor = self.predictor(model)
        prompts = predictor.encode(conversations)
        started = time.perf_counter()
        if self.label_set is not None:
            assert self.scoring is not None
            found = predictor.classify(prompts, self.label_set, self.scoring)
            labels = self.label_set.labels
            pred = [labels[p.label] for p in found]
            confidence: list[float | None] = [p.confidence for p in found]
            seconds = time.perf_counter() - started
            free = [g.text for g in predictor.generate(prompts, self.max_new)]
        else:
            outputs = predictor.generate(prompts, self.max_new)
            pred = [g.text for g in outputs]
            confidence = [g.confidence for g in outputs]
            seconds = time.perf_counter() - started
            free = None
        return _Variant(
            name,
            pred,
            confidence,
            seconds,
            prompt_tokens=float(np.mean([len(p) for p in prompts])),
            free=free,
            prompts=prompts,
        )

    def variation(self, model: Any, variant: _Variant) -> float | None:
        """Share of (up to 50) examples whose sampled answer differs across 3 seeds."""
        from tuneforge.eval.metrics import normalize_text
        from tuneforge.eval.predict import Sampling

        if not variant.prompts:
            return None
        prompts = variant.prompts[:VARIATION_EXAMPLES]
        predictor = self.predictor(model)
        runs = [
            [
                normalize_text(g.text)
                for g in predictor.generate(prompts, self.max_new, sampling=Sampling(), seed=seed)
            ]
            for seed in VARIATION_SEEDS
        ]
        differs = [len({run[i] for run in runs}) > 1 for i in range(len(prompts))]
        return float(np.mean(differs))


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def _correct(plan: _Plan, pred: Sequence[str]) -> np.ndarray:
    from tuneforge.eval.metrics import exact_match_scores

    if plan.run.labels is not None:
        return np.array([p == g for p, g in zip(pred, plan.gold, strict=True)], dtype=bool)
    return np.array(exact_match_scores(plan.gold, list(pred)), dtype=float) > 0.5


def _ci(values: Sequence[float]) -> list[float]:
    from tuneforge.eval.stats import bootstrap_ci

    lo, hi = bootstrap_ci(np.asarray(values, dtype=float))
    return [lo, hi]


def _summary(plan: _Plan, variant: _Variant) -> dict[str, Any]:
    from tuneforge.eval import metrics

    common = {
        "prompt_tokens": variant.prompt_tokens,
        "output_variation": variant.variation,
        "seconds": round(variant.seconds, 3),
    }
    if plan.run.labels is not None:
        from tuneforge.eval.stats import macro_f1_ci

        labels = plan.run.labels
        scores = metrics.classification_metrics(plan.gold, variant.pred, labels)
        free = variant.free
        return {
            "accuracy": scores["accuracy"],
            "accuracy_ci": _ci(_correct(plan, variant.pred)),
            "macro_f1": scores["macro_f1"],
            "macro_f1_ci": list(macro_f1_ci(plan.gold, variant.pred, labels)),
            "per_class": scores["per_class"],
            "invalid_rate": (
                float(np.mean([text not in set(labels) for text in free])) if free else None
            ),
            "free_generation_exact_match": (
                float(np.mean([text == g for text, g in zip(free, plan.gold, strict=True)]))
                if free
                else None
            ),
            **common,
        }
    scores = metrics.generation_metrics(plan.gold, variant.pred)
    scores.pop("n", None)
    if scores.get("json"):
        from tuneforge.eval.stats import bootstrap_metric_ci

        def field_f1(golds: list[str], preds: list[str]) -> float:
            return metrics.json_field_scores(golds, preds)["field_f1"]

        scores["json"]["field_f1_ci"] = list(bootstrap_metric_ci(plan.gold, variant.pred, field_f1))
    return {
        **scores,
        "exact_match_ci": _ci(metrics.exact_match_scores(plan.gold, variant.pred)),
        "token_f1_ci": _ci(metrics.token_f1_scores(plan.gold, variant.pred)),
        "rouge_l_ci": _ci(metrics.rouge_l_scores(plan.gold, variant.pred)),
        "invalid_rate": None,
        "free_generation_exact_match": None,
        **common,
    }


def _metric_of(summary: dict[str, Any], key: str) -> tuple[float, list[float]]:
    """(value, [lo, hi]) of a metric in a variant summary; JSON field scores sit under "json"."""
    block = summary["json"] if key.startswith("field_") else summary
    return block[key], block[f"{key}_ci"]


def _strongest(summaries: dict[str, dict[str, Any]], key: str) -> str | None:
    """The best baseline by the primary metric (ties: classic, the cheapest, then order)."""
    others = [name for name in summaries if name != "tuned"]
    if not others:
        return None
    return max(others, key=lambda n: (_metric_of(summaries[n], key)[0], n == "classic"))


def _comparisons(plan: _Plan, variants: dict[str, _Variant], key: str) -> dict[str, Any]:
    """Tuned vs each baseline on the primary metric, paired (same examples).

    Classification: McNemar on per-example correctness + the paired bootstrap interval of the
    accuracy difference. Generation: the paired bootstrap interval of the difference in the
    primary metric (token F1, or micro JSON field F1); McNemar needs a right/wrong outcome, so
    it is given for exact match, under "exact_match_mcnemar", and not used for the verdict.
    Convention of tuneforge.eval.stats: a = baseline, b = tuned (positive = tuned better).
    """
    from tuneforge.eval.stats import mcnemar, paired_difference_ci

    tuned = variants["tuned"]
    out: dict[str, Any] = {}
    for name, variant in variants.items():
        if name == "tuned":
            continue
        entry: dict[str, Any] = {"metric": key}
        if plan.run.labels is not None:
            a, b = _correct(plan, variant.pred), _correct(plan, tuned.pred)
            entry["mcnemar"] = mcnemar(a, b)
            diff, lo, hi = paired_difference_ci(a, b)
        else:
            entry["mcnemar"] = None
            entry["exact_match_mcnemar"] = mcnemar(
                _correct(plan, variant.pred), _correct(plan, tuned.pred)
            )
            if key == "field_f1":
                diff, lo, hi = _field_f1_difference(plan.gold, variant.pred, tuned.pred)
            else:
                diff, lo, hi = paired_difference_ci(
                    _scores(plan, variant.pred, key), _scores(plan, tuned.pred, key)
                )
        entry["difference"] = {"diff": diff, "lo": lo, "hi": hi}
        out[name] = entry
    return out


def _field_f1_difference(
    gold: list[str], baseline: list[str], tuned: list[str]
) -> tuple[float, float, float]:
    """(diff, lo, hi) of micro JSON field F1, tuned - baseline, by a paired bootstrap of examples."""
    from tuneforge.eval.metrics import json_field_scores
    from tuneforge.eval.stats import bootstrap_metric_ci

    def delta(rows: list[int], _: list[int]) -> float:
        golds = [gold[i] for i in rows]
        ours = json_field_scores(golds, [tuned[i] for i in rows])["field_f1"]
        theirs = json_field_scores(golds, [baseline[i] for i in rows])["field_f1"]
        return ours - theirs

    rows = list(range(len(gold)))
    lo, hi = bootstrap_metric_ci(rows, rows, delta)
    return delta(rows, rows), lo, hi


def _scores(plan: _Plan, pred: Sequence[str], key: str) -> np.ndarray:
    from tuneforge.eval import metrics

    per_example = {
        "exact_match": metrics.exact_match_scores,
        "token_f1": metrics.token_f1_scores,
        "rouge_l": metrics.rouge_l_scores,
    }
    if key == "accuracy":
        return _correct(plan, pred).astype(float)
    return np.asarray(per_example[key](plan.gold, list(pred)), dtype=float)


def _examples(
    plan: _Plan, indices: Sequence[int], tuned: _Variant, other: _Variant | None
) -> list[dict[str, Any]]:
    return [
        {
            "index": int(i),
            "text": bl.example_text(plan.rows[i]),
            "gold": plan.gold[i],
            "pred": tuned.pred[i],
            "other_pred": other.pred[i] if other is not None else None,
            "confidence": tuned.confidence[i],
        }
        for i in indices
    ]


def _compared_strings(plan: _Plan, pred: Sequence[str]) -> list[str]:
    from tuneforge.eval.metrics import normalize_text

    return list(pred) if plan.run.labels is not None else [normalize_text(p) for p in pred]


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def evaluate(
    run_dir: str | Path,
    data_path: str | Path | None,
    out_dir: str | Path | None = None,
    baselines: Sequence[str] = bl.ALL_BASELINES,
    shots: int = DEFAULT_SHOTS,
    prompts_file: str | Path | None = None,
    scoring: str = "auto",
    *,
    force: bool = False,
    device: str = "cpu",
    batch_size: int = 16,
    forgetting: bool = True,
    variation: bool = True,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate the run in `run_dir` on `data_path`; write the report into `out_dir`.

    `out_dir` defaults to RUN_DIR/eval. Returns the results (what metrics.json holds).
    Bad inputs raise TuneforgeError before anything is loaded or written.
    """
    from tuneforge.fsutil import atomic_directory

    if batch_size < 1:
        raise TuneforgeError(f"--batch-size must be at least 1 (got {batch_size})")
    plan = _plan(run_dir, data_path, out_dir, baselines, shots, prompts_file, scoring, force, limit)
    with atomic_directory(plan.out_dir, overwrite=force) as tmp:
        results = _evaluate(
            plan, tmp, shots, scoring, device, batch_size, forgetting, variation, log
        )
    return results


def _evaluate(
    plan: _Plan,
    tmp: Path,
    shots: int,
    scoring: str,
    device: str,
    batch_size: int,
    with_forgetting: bool,
    with_variation: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from tuneforge.eval import forgetting as fg
    from tuneforge.eval.perplexity import perplexity
    from tuneforge.models.trained import (
        base_model_view,
        is_adapter_model,
        load_base,
        load_trained,
        merged_adapter,
    )

    run = plan.run
    n = len(plan.rows)
    log(f"loading {run.path} ({run.config.method.kind} on {run.config.model.name})")
    model, tokenizer, cfg = load_trained(run.path, device=device)
    runner = _Runner(plan, tokenizer, scoring, batch_size)
    variants: dict[str, _Variant] = {}

    # -- the fine-tuned model ------------------------------------------------------------------
    with merged_adapter(model):  # plain linear layers while the tuned model predicts
        tuned = runner.run("tuned", model, _conversations("tuned", plan, shots))
    variants["tuned"] = tuned
    log(f"tuned: {n} examples in {tuned.seconds:.1f} s")
    ppl = perplexity(
        model, tokenizer, plan.rows, max_seq_len=cfg.model.max_seq_len, batch_size=batch_size
    )
    forgetting_tuned = fg.forgetting_score(runner.predictor(model)) if with_forgetting else None
    prompt_outputs: dict[str, list[str]] = {}
    if plan.prompts:
        prompt_outputs["tuned"] = _answer_prompts(runner, model, plan.prompts)
    if with_variation:
        tuned.variation = runner.variation(model, tuned)

    # -- the base model --------------------------------------------------------------------------
    base_needed = bool(
        [b for b in plan.baselines if b in bl.PROMPTING] or with_forgetting or plan.prompts
    )
    forgetting_base = None
    if base_needed:
        if is_adapter_model(model):
            base_scope = base_model_view(model)
        else:
            log("loading the base model again (full fine-tune)")
            del model
            base_scope = contextlib.nullcontext(load_base(run.path, device=device)[0])
        with base_scope as base:
            for kind in bl.PROMPTING:
                if kind not in plan.baselines:
                    continue
                variant = runner.run(f"base_{kind}", base, _conversations(kind, plan, shots))
                variants[variant.name] = variant
                log(f"base {kind}: {n} examples in {variant.seconds:.1f} s")
            if with_forgetting:
                forgetting_base = fg.forgetting_score(runner.predictor(base))
            if plan.prompts:
                prompt_outputs["base"] = _answer_prompts(runner, base, plan.prompts)
            prompting = [v for name, v in variants.items() if name.startswith("base_")]
            if with_variation and prompting:
                best = max(prompting, key=lambda v: float(np.mean(_correct(plan, v.pred))))
                best.variation = runner.variation(base, best)

    # -- the classic classifier ------------------------------------------------------------------
    if "classic" in plan.baselines:
        started = time.perf_counter()
        try:
            pred, confidence = bl.classic_baseline(
                [bl.example_text(row) for row in plan.train_rows],
                [row["label"] for row in plan.train_rows],
                [bl.example_text(row) for row in plan.rows],
            )
        except bl.BaselineUnavailable as exc:
            plan.notes.append(str(exc))
            log(f"note: {exc}")
        else:
            variants["classic"] = _Variant(
                "classic", pred, list(confidence), time.perf_counter() - started
            )
            log(f"classic: {n} examples in {variants['classic'].seconds:.1f} s")

    # -- results -----------------------------------------------------------------------------------
    variants = {name: variants[name] for name in VARIANT_ORDER if name in variants}
    summaries = {name: _summary(plan, v) for name, v in variants.items()}
    from tuneforge.eval.report import primary_metric

    key, _ = primary_metric({"task": run.task, "variants": summaries})
    strongest = _strongest(summaries, key)
    other = variants[strongest] if strongest else None
    gold_cmp = _compared_strings(plan, plan.gold)
    tuned_cmp = _compared_strings(plan, tuned.pred)
    from tuneforge.eval import metrics

    flipped = None
    if other is not None:
        flips = metrics.flipped(gold_cmp, _compared_strings(plan, other.pred), tuned_cmp)
        flipped = {
            "vs": strongest,
            "fixed": _examples(plan, flips["fixed"], tuned, other),
            "broken": _examples(plan, flips["broken"], tuned, other),
        }
    worst = metrics.worst_examples(gold_cmp, tuned_cmp, tuned.confidence, k=WORST_K)
    results: dict[str, Any] = {
        "task": run.task,
        "run": str(run.path),
        "n": n,
        "labels": run.labels,
        "variants": summaries,
        "comparisons": _comparisons(plan, variants, key),
        "confusions": (
            metrics.top_confusions(plan.gold, tuned.pred, k=10) if run.labels is not None else []
        ),
        "flipped": flipped,
        "worst": _examples(plan, worst, tuned, other),
        "perplexity": ppl,
        "forgetting": (
            fg.compare(forgetting_base, forgetting_tuned)
            if forgetting_base is not None and forgetting_tuned is not None
            else None
        ),
        "prompts": (
            [
                {"prompt": text, "base": base_out, "tuned": tuned_out}
                for text, base_out, tuned_out in zip(
                    plan.prompt_texts, prompt_outputs["base"], prompt_outputs["tuned"], strict=True
                )
            ]
            if plan.prompts
            else None
        ),
        "data": str(plan.data_path),
        "model": run.config.model.name,
        "method": run.config.method.kind,
        "scoring": runner.scoring,
        "shots": shots if {"fewshot", "rag"} & set(plan.baselines) else None,
        "notes": plan.notes,
    }
    _write(plan, tmp, results, variants, key)
    return results


def _answer_prompts(runner: _Runner, model: Any, conversations: list[Messages]) -> list[str]:
    predictor = runner.predictor(model)
    budget = min(PROMPT_TOKENS_MAX, max(64, runner.max_new))
    return [g.text for g in predictor.generate(predictor.encode(conversations), budget)]


def _write(
    plan: _Plan, tmp: Path, results: dict[str, Any], variants: dict[str, _Variant], key: str
) -> None:
    from tuneforge.eval import plots as pl
    from tuneforge.eval.report import write_report

    plots: dict[str, Path] = {}
    bars = {}
    for name, summary in results["variants"].items():
        value, (lo, hi) = _metric_of(summary, key)
        bars[name] = (value, lo, hi)
    plots["comparison"] = tmp / "comparison.png"
    pl.comparison_bar_png(bars, plots["comparison"], key.replace("_", " "))
    if plan.run.labels is not None:
        plots["confusion_tuned"] = tmp / "confusion_tuned.png"
        pl.confusion_matrix_png(
            plan.gold, variants["tuned"].pred, plan.run.labels, plots["confusion_tuned"],
            title="fine-tuned",
        )  # fmt: skip
        strongest = results["flipped"]["vs"] if results["flipped"] else None
        if strongest is not None:
            plots[f"confusion_{strongest}"] = tmp / f"confusion_{strongest}.png"
            pl.confusion_matrix_png(
                plan.gold, variants[strongest].pred, plan.run.labels,
                plots[f"confusion_{strongest}"], title=strongest,
            )  # fmt: skip
    with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for i, row in enumerate(plan.rows):
            record: dict[str, Any] = {
                "index": i,
                "text": bl.example_text(row),
                "gold": plan.gold[i],
            }
            for name, variant in variants.items():
                record[name] = variant.pred[i]
                record[f"{name}_confidence"] = variant.confidence[i]
                if variant.free is not None:
                    record[f"{name}_free"] = variant.free[i]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    write_report(tmp, results, plots)
