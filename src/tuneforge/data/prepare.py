"""`prepare`: raw files -> validated, cleaned, deduplicated, split chat JSONL with a manifest.

Each step is a small function; `prepare` reads top to bottom as the pipeline. Everything is
written into a temp directory renamed into place, so a failure leaves no output behind.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.config import PrepareConfig
from tuneforge.data import clean, near_dedup
from tuneforge.data.convert import Columns, ConvertOptions, detect_columns, to_example
from tuneforge.data.format import token_lengths
from tuneforge.data.load import read_records
from tuneforge.data.records import DataError, Example, Location, Problem, RawRecord
from tuneforge.data.split import SPLITS, assign_splits, min_per_stratum
from tuneforge.fsutil import atomic_directory, check_output_dir, sha256_bytes, sha256_file

SKIP_HINT = "fix these rows, or pass --on-error skip to drop them (they go to rejected.jsonl)"


@dataclass
class InputFile:
    path: str
    sha256: str | None
    records: int = 0
    format: str = ""


@dataclass
class NearDuplicate:
    first: Example
    second: Example
    similarity: float


@dataclass
class PrepareOutcome:
    """Everything `prepare` decided, for the manifest and the report."""

    task: str
    inputs: list[InputFile]
    splits: dict[str, list[Example]]
    labels: list[str] | None
    token_lengths: dict[str, list[int]]
    rejected: list[Problem] = field(default_factory=list)
    duplicates: list[tuple[Example, Example]] = field(default_factory=list)
    conflicts: list[list[Example]] = field(default_factory=list)
    conflict_dropped: list[Example] = field(default_factory=list)
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    near_dropped: list[Example] = field(default_factory=list)
    leaked: list[NearDuplicate] = field(default_factory=list)  # (pool example, test example)
    rare_dropped: list[Problem] = field(default_factory=list)
    test_file: InputFile | None = None


def load_examples(
    path: str, cfg: PrepareConfig, task: str | None
) -> tuple[InputFile, list[Example], list[Problem], Columns | None]:
    """Read and convert one input; `task=None` detects it from the file's format."""
    info = InputFile(path, sha256_file(path) if os.path.isfile(path) else None)
    records: list[RawRecord] = []
    problems: list[Problem] = []
    for item in read_records(path, max_line_bytes=cfg.max_line_bytes):
        (problems if isinstance(item, Problem) else records).append(item)
    info.records = len(records) + len(problems)
    if not records:
        if problems:
            raise DataError(problems, hint=f"{path}: no usable rows")
        raise DataError([Problem(Location(path), "has no rows; add examples to it")])
    columns = detect_columns(
        list(records[0].fields),
        cfg.format,
        cfg.text_col,
        cfg.label_col,
        cfg.prompt_col,
        cfg.response_col,
    )
    if isinstance(columns, str):
        raise DataError([Problem(records[0].where, columns)])
    info.format = columns.format
    if task is None:
        task = "classification" if columns.format == "text_label" else "generation"
    options = ConvertOptions(task=task, system=cfg.system, template=cfg.template)
    examples: list[Example] = []
    for record in records:
        converted = to_example(record, columns, options)
        (problems if isinstance(converted, Problem) else examples).append(converted)
    return info, examples, problems, columns


def check_examples(
    examples: list[Example], cfg: PrepareConfig, tokenizer: Any
) -> tuple[list[Example], list[Problem], list[int]]:
    """Label-set and length checks; returns the passing examples, problems and token lengths."""
    allowed = set(cfg.labels) if cfg.labels else None
    lengths = token_lengths(tokenizer, [e.messages for e in examples])
    good: list[Example] = []
    good_lengths: list[int] = []
    problems: list[Problem] = []
    for example, length in zip(examples, lengths, strict=True):
        if allowed is not None and example.label not in allowed:
            problems.append(
                Problem(
                    example.where,
                    f"label {example.label!r} is not in --labels ({', '.join(sorted(allowed))})",
                    field="label",
                    raw=_row(example),
                )
            )
        elif length > cfg.max_tokens:
            problems.append(
                Problem(
                    example.where,
                    f"is {length} tokens long under tokenizer {cfg.tokenizer}, over --max-tokens "
                    f"{cfg.max_tokens}; shorten it or raise --max-tokens",
                    field="messages",
                    raw=_row(example),
                )
            )
        else:
            good.append(example)
            good_lengths.append(length)
    return good, problems, good_lengths


def rare_label_problems(
    examples: list[Example], needed: int, n_splits: int, removed: Counter[str | None] | None = None
) -> list[Problem]:
    """A problem per example of a label too rare to stratify; `removed`: per label, the
    duplicates cleaning dropped (so a file of repeated rows says so, not just "1 example")."""
    counts = Counter(e.label for e in examples)
    removed = removed or Counter()
    problems = []
    for example in examples:
        count = counts[example.label]
        if count < needed:
            dropped = removed[example.label]
            because = (
                f" ({dropped} duplicate{'s' * (dropped != 1)} of it removed)" if dropped else ""
            )
            problems.append(
                Problem(
                    example.where,
                    f"label {example.label!r} has {count} example{'s' * (count != 1)} after "
                    f"cleaning{because}; a stratified split into {n_splits} parts needs at least "
                    f"{needed} per label: add distinct examples, or drop the label",
                    field="label",
                    raw=_row(example),
                )
            )
    return problems


def find_leaks(
    pool: list[Example], test: list[Example], threshold: float
) -> tuple[list[Example], list[NearDuplicate]]:
    """Drop pool examples identical or near-identical to a test example."""
    keys = [clean.identity(e) for e in pool] + [clean.identity(e) for e in test]
    leaked_index: dict[int, NearDuplicate] = {}
    for pair in near_dedup.near_duplicate_pairs(keys, threshold):
        if pair.first < len(pool) <= pair.second and pair.first not in leaked_index:
            leaked_index[pair.first] = NearDuplicate(
                pool[pair.first], test[pair.second - len(pool)], pair.similarity
            )
    kept = [e for i, e in enumerate(pool) if i not in leaked_index]
    return kept, [leaked_index[i] for i in sorted(leaked_index)]


def read_paths(cfg: PrepareConfig) -> list[str]:
    """The local files and directories prepare reads (inputs, test file, tokenizer directory)."""
    paths = [*cfg.inputs, *([cfg.test_file] if cfg.test_file else []), cfg.tokenizer]
    return [p for p in paths if not p.startswith("hf:") and Path(p).exists()]


def prepare(cfg: PrepareConfig, tokenizer: Any) -> PrepareOutcome:
    """Run the whole pipeline and write the output directory; raises DataError on bad input."""
    check_output_dir(cfg.output_dir, overwrite=cfg.force, inputs=read_paths(cfg))
    forced_task = None if cfg.task == "auto" else cfg.task
    inputs: list[InputFile] = []
    examples: list[Example] = []
    problems: list[Problem] = []
    for path in cfg.inputs:
        info, found, bad, _ = load_examples(path, cfg, forced_task)
        inputs.append(info)
        examples.extend(found)
        problems.extend(bad)
    task = forced_task or _task_of(inputs)
    if task == "classification" and any(e.label is None for e in examples):
        raise DataError(
            [Problem(Location(i.path), f"is {i.format}, which has no labels") for i in inputs],
            hint="classification needs text+label rows; use --task generation",
        )
    examples, length_problems, _ = check_examples(examples, cfg, tokenizer)
    problems.extend(length_problems)
    if problems and cfg.on_error == "fail":
        raise DataError(problems, hint=SKIP_HINT)

    dedup = clean.drop_exact_duplicates(examples, cfg.conflicts)
    pool = dedup.kept
    outcome = PrepareOutcome(task, inputs, {}, None, {}, rejected=problems)
    outcome.duplicates, outcome.conflicts = dedup.duplicates, dedup.conflicts
    outcome.conflict_dropped = dedup.conflict_dropped

    test_examples: list[Example] = []
    ratios = list(cfg.split)
    if cfg.test_file:
        test_info, test_examples, test_bad, _ = load_examples(cfg.test_file, cfg, task)
        test_examples, more_bad, _ = check_examples(test_examples, cfg, tokenizer)
        if test_bad or more_bad:
            raise DataError(
                test_bad + more_bad, hint=f"the --test file {cfg.test_file} must be clean"
            )
        test_examples = clean.drop_exact_duplicates(test_examples, "keep").kept
        outcome.test_file = test_info
        pool, outcome.leaked = find_leaks(pool, test_examples, cfg.near_dup_threshold)
        ratios = [cfg.split[0], cfg.split[1]]

    keys = [clean.identity(e) for e in pool]
    pairs = near_dedup.near_duplicate_pairs(keys, cfg.near_dup_threshold)
    outcome.near_duplicates = [
        NearDuplicate(pool[p.first], pool[p.second], p.similarity) for p in pairs
    ]
    groups = near_dedup.group_ids(len(pool), pairs)
    if cfg.near_dedup == "drop":
        outcome.near_dropped = [e for i, e in enumerate(pool) if groups[i] != i]
        pool = [e for i, e in enumerate(pool) if groups[i] == i]
        groups = list(range(len(pool)))

    needed = min_per_stratum(ratios)
    if task == "classification":
        duplicates = Counter(e.label for e, _ in outcome.duplicates)
        duplicates.update(e.label for e in outcome.near_dropped)
        rare = rare_label_problems(pool, needed, sum(1 for r in ratios if r > 0), duplicates)
        if rare and cfg.on_error == "fail":
            raise DataError(rare, hint=SKIP_HINT)
        outcome.rare_dropped = rare
        rare_labels = {p.raw["label"] for p in rare}
        keep = [i for i, e in enumerate(pool) if e.label not in rare_labels]
        pool, groups = [pool[i] for i in keep], [groups[i] for i in keep]
    _check_enough(pool, outcome, needed)

    strata = [e.label for e in pool] if task == "classification" else [None] * len(pool)
    assignment = assign_splits(groups, strata, ratios, cfg.seed)
    outcome.splits = {name: [] for name in SPLITS}
    for example, split_index in zip(pool, assignment, strict=True):
        outcome.splits[SPLITS[split_index]].append(example)
    if cfg.test_file:
        outcome.splits["test"] = test_examples
    if task == "classification":
        outcome.labels = sorted({e.label for e in pool} | {e.label for e in test_examples})
    outcome.token_lengths = {
        name: token_lengths(tokenizer, [e.messages for e in rows])
        for name, rows in outcome.splits.items()
    }
    write_outputs(cfg, outcome)
    return outcome


def _row(example: Example) -> dict[str, Any]:
    """The JSON row written for an example: chat messages, plus label and raw text if any."""
    row: dict[str, Any] = {"messages": example.messages}
    if example.label is not None:
        row["label"] = example.label
        row["text"] = example.text
    row["source"] = str(example.where)
    return row


def _task_of(inputs: list[InputFile]) -> str:
    formats = {i.format for i in inputs}
    if formats == {"text_label"}:
        return "classification"
    if "text_label" in formats:
        raise DataError(
            [Problem(Location(i.path), f"is {i.format}") for i in inputs],
            hint="inputs mix text+label files with other formats; pass --task to choose",
        )
    return "generation"


def _check_enough(pool: list[Example], outcome: PrepareOutcome, needed: int) -> None:
    where = Location(", ".join(i.path for i in outcome.inputs))
    if len(pool) < needed:
        removed = {
            "invalid": len(outcome.rejected),
            "duplicates": len(outcome.duplicates),
            "in label conflicts": len(outcome.conflict_dropped),
            "near-duplicates": len(outcome.near_dropped),
            "leaked into the test file": len(outcome.leaked),
            "with too-rare labels": len(outcome.rare_dropped),
        }
        why = ", ".join(f"{n} {reason}" for reason, n in removed.items() if n)
        raise DataError(
            [
                Problem(
                    where,
                    f"only {len(pool)} usable example{'s' * (len(pool) != 1)} remain after "
                    f"cleaning ({why or 'nothing removed'}); at least {needed} are needed, one "
                    "per split: add distinct examples",
                )
            ]
        )
    labels = {e.label for e in pool}
    if outcome.task == "classification" and len(labels) < 2:
        raise DataError(
            [
                Problem(
                    where,
                    f"every example has the label {pool[0].label!r}; a classifier needs two or "
                    "more labels (or use --task generation)",
                )
            ]
        )


def _dump_jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {"p50": 0, "p95": 0, "max": 0}
    ordered = sorted(lengths)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95), "max": ordered[-1]}


def write_outputs(cfg: PrepareConfig, outcome: PrepareOutcome) -> None:
    from tuneforge.data.report import render_report

    files: dict[str, bytes] = {
        f"{name}.jsonl": _dump_jsonl([_row(e) for e in rows])
        for name, rows in outcome.splits.items()
    }
    if outcome.labels is not None:
        files["labels.json"] = (
            json.dumps(outcome.labels, ensure_ascii=False, indent=2) + "\n"
        ).encode()
    if outcome.rejected or outcome.rare_dropped:
        files["rejected.jsonl"] = _dump_jsonl(
            [
                {"source": str(p.where), "field": p.field, "reason": p.message, "row": p.raw}
                for p in outcome.rejected + outcome.rare_dropped
            ]
        )
    manifest = build_manifest(
        cfg, outcome, {name: sha256_bytes(data) for name, data in files.items()}
    )
    files["manifest.json"] = (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode()
    files["report.md"] = render_report(cfg, outcome, manifest).encode("utf-8")
    with atomic_directory(cfg.output_dir, overwrite=cfg.force, inputs=read_paths(cfg)) as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)


def build_manifest(
    cfg: PrepareConfig, outcome: PrepareOutcome, file_hashes: dict[str, str]
) -> dict[str, Any]:
    read = sum(i.records for i in outcome.inputs)
    written = sum(
        len(v) for k, v in outcome.splits.items() if not (k == "test" and outcome.test_file)
    )
    options = cfg.model_dump(mode="json", exclude={"inputs", "output_dir", "test_file", "force"})
    return {
        "tuneforge_version": __version__,
        "task": outcome.task,
        "inputs": [
            {"path": i.path, "sha256": i.sha256, "records": i.records, "format": i.format}
            for i in outcome.inputs
        ],
        "test_file": None
        if outcome.test_file is None
        else {
            "path": outcome.test_file.path,
            "sha256": outcome.test_file.sha256,
            "records": outcome.test_file.records,
        },
        "seed": cfg.seed,
        "split_ratios": list(cfg.split),
        "rows": {
            "read": read,
            "invalid": len(outcome.rejected),
            "duplicate": len(outcome.duplicates),
            "conflict": len(outcome.conflict_dropped),
            "near_duplicate": len(outcome.near_dropped),
            "leaked_into_test": len(outcome.leaked),
            "rare_label": len(outcome.rare_dropped),
            "written": written,
        },
        "splits": {name: len(rows) for name, rows in outcome.splits.items()},
        "labels": outcome.labels,
        "tokenizer": cfg.tokenizer,
        "token_lengths": {name: _percentiles(v) for name, v in outcome.token_lengths.items()},
        "files": file_hashes,
        "options": options,
    }
