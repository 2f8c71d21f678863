"""Banking77 recipe benchmark: seeded split -> train a `configs/banking77/` recipe -> `tuneforge eval`.

    python benchmarks/banking77.py --model smollm2-135m --method lora --per-class 10 --out OUT
    python benchmarks/banking77.py --model smollm2-135m --method lora --per-class full --out OUT
    python benchmarks/banking77.py ... --eval-split val          # tuning: never look at test
    python benchmarks/banking77.py ... train.lr=1e-3 train.epochs=8   # overrides go to train

1. `tuneforge prepare` splits ../shared/data/banking77/train.csv once per seed into stratified,
   near-duplicate-aware train/val/test (80/10/10) with the raw labels, cached in --cache. The
   test (and val) split is therefore fixed: it does not depend on --per-class, on the label
   wording or on the system prompt.
2. A dataset variant is derived from it in OUT/data: the train split subsampled to N examples
   per intent (seeded, nested: the 10-per-class rows are among the 20-per-class rows), the
   labels reworded (`--labels readable`: card_arrival -> "card arrival"), the system prompt set.
3. `tuneforge train CONFIG data.dir=OUT/data [overrides] -o OUT/run` (resumed with --resume if
   OUT/run holds an unfinished run, skipped if it is finished).
4. `tuneforge eval OUT/run --data OUT/data/{test|val}.jsonl -o OUT/eval-{split}`.

Prints one JSON line, also written to OUT/result-SPLIT.json: accuracy with its 95 % interval
for the tuned model and each baseline, the ratio to the classic (MiniLM + logistic regression)
baseline, the top confusions with the raw label names, the card_arrival /
card_delivery_estimate confusion counts, and wall times.
Run it with OMP_NUM_THREADS=1 and `nice -n 19` on a shared CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared/data/banking77/train.csv"
DEFAULT_SYSTEM = "Classify the message. Answer with the label only."
BANKING_SYSTEM = (
    "Classify the bank customer's message into one of 77 intents. Answer with the intent only."
)
SPLIT = (0.8, 0.1, 0.1)
WATCHED_PAIR = ("card_arrival", "card_delivery_estimate")

Row = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# pure parts (tested in tests/benchmarks/test_banking77.py)
# ---------------------------------------------------------------------------------------------


def readable_label(label: str) -> str:
    """card_arrival -> "card arrival"; Refund_not_showing_up -> "refund not showing up"."""
    return " ".join(label.split("_")).strip().lower()


def label_mapping(labels: Iterable[str], wording: str) -> dict[str, str]:
    """raw label -> label as trained; must be one-to-one so predictions map back."""
    labels = sorted(set(labels))
    if wording == "raw":
        return {label: label for label in labels}
    if wording != "readable":
        raise ValueError(f"unknown label wording {wording!r} (raw or readable)")
    mapping = {label: readable_label(label) for label in labels}
    if len(set(mapping.values())) != len(mapping):
        counts = Counter(mapping.values())
        clash = sorted(k for k, v in mapping.items() if counts[v] > 1)
        raise ValueError(f"readable wording merges labels: {clash}")
    return mapping


def subsample_per_class(rows: Sequence[Row], per_class: int | None, seed: int) -> list[Row]:
    """At most `per_class` rows of each label, seeded per label, kept in file order.

    Nested: the rows chosen for n are among those chosen for any m > n (same seed), so a
    10-per-class run trains on a subset of a 20-per-class run. None keeps every row.
    """
    if per_class is None:
        return list(rows)
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_label[row["label"]].append(index)
    keep: list[int] = []
    for label in sorted(by_label):
        indices = list(by_label[label])
        random.Random(f"{seed}:{label}").shuffle(indices)
        keep.extend(indices[:per_class])
    return [rows[i] for i in sorted(keep)]


def reword_row(row: Row, mapping: dict[str, str], system: str | None) -> Row:
    """The row with its label (field and assistant answer) reworded and its system prompt set."""
    label = mapping[row["label"]]
    messages = [dict(m) for m in row["messages"] if m.get("role") != "system"]
    if messages[-1].get("role") != "assistant":
        raise ValueError("a prepared classification row ends with the assistant's label")
    messages[-1]["content"] = label
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {**row, "messages": messages, "label": label}


def parse_per_class(text: str) -> int | None:
    if text.lower() in ("full", "all"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--per-class must be a positive number or 'full'")
    return value


def pair_confusions(gold: Sequence[str], pred: Sequence[str], a: str, b: str) -> dict[str, int]:
    """How often a was predicted as b and b as a (raw label names)."""
    pairs = Counter(zip(gold, pred, strict=True))
    return {f"{a}->{b}": pairs[(a, b)], f"{b}->{a}": pairs[(b, a)]}


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_if_changed(path: Path, data: bytes) -> str:
    """Write `data` unless the file already holds it (a rerun must not disturb a reader)."""
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _jsonl_bytes(rows: Iterable[Row]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def base_split(csv: Path, cache: Path, seed: int) -> Path:
    """The canonical `tuneforge prepare` split of the CSV (raw labels), made once per seed."""
    from tuneforge.config import PrepareConfig, resolve
    from tuneforge.data.prepare import prepare
    from tuneforge.fsutil import sha256_file
    from tuneforge.models.load import load_tokenizer

    digest = sha256_file(str(csv))
    out = cache / f"split-seed{seed}-{digest[:12]}"
    if (out / "manifest.json").is_file():
        return out
    cfg = resolve(
        PrepareConfig,
        base={
            "inputs": [str(csv)],
            "output_dir": str(out),
            "text_col": "text",
            "label_col": "category",
            "task": "classification",
            "system": DEFAULT_SYSTEM,
            "split": list(SPLIT),
            "seed": seed,
        },
    )
    prepare(cfg, load_tokenizer(cfg.tokenizer))
    return out


def make_variant(
    base: Path, out: Path, per_class: int | None, wording: str, system: str | None, seed: int
) -> dict[str, Any]:
    """OUT/data: the base split with the train split subsampled and the labels reworded."""
    raw_labels = json.loads((base / "labels.json").read_text(encoding="utf-8"))
    mapping = label_mapping(raw_labels, wording)
    splits = {name: _read_jsonl(base / f"{name}.jsonl") for name in ("train", "val", "test")}
    splits["train"] = subsample_per_class(splits["train"], per_class, seed)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {
        f"{name}.jsonl": _write_if_changed(
            out / f"{name}.jsonl", _jsonl_bytes(reword_row(r, mapping, system) for r in rows)
        )
        for name, rows in splits.items()
    }
    labels = sorted(mapping.values())
    _write_if_changed(out / "labels.json", _json_bytes(labels))
    _write_if_changed(out / "label_map.json", _json_bytes(mapping))
    manifest = json.loads((base / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(
        splits={name: len(rows) for name, rows in splits.items()},
        labels=labels,
        files=hashes,
        derived_from={
            "dir": str(base),
            "by": "benchmarks/banking77.py",
            "per_class": per_class,
            "label_wording": wording,
            "system": system,
            "subsample_seed": seed,
        },
    )
    _write_if_changed(out / "manifest.json", _json_bytes(manifest))
    return {"splits": manifest["splits"], "mapping": mapping}


# ---------------------------------------------------------------------------------------------
# train + eval
# ---------------------------------------------------------------------------------------------


def _tuneforge() -> list[str]:
    exe = Path(sys.executable).with_name("tuneforge")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "tuneforge"]


def _run(cmd: list[str], log: Path) -> float:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as handle:
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        raise SystemExit(f"command failed ({code}); last lines of {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def train(config: str, data: Path, run: Path, overrides: list[str], log: Path) -> float | None:
    """Seconds spent training now; None when the run was already finished."""
    if (run / "manifest.json").is_file():
        return None
    cmd = [*_tuneforge(), "train", config, f"data.dir={data}", *overrides, "-o", str(run)]
    if run.exists():
        cmd.append("--resume")  # an unfinished run: continue from its latest checkpoint
    return _run(cmd, log)


def evaluate(run: Path, data: Path, out: Path, args: argparse.Namespace, log: Path) -> float:
    cmd = [*_tuneforge(), "eval", str(run), "--data", str(data), "-o", str(out), "--force"]
    cmd += ["--baselines", args.baselines, "--scoring", args.scoring, "--shots", str(args.shots)]
    cmd += ["--no-forgetting", "--no-variation", "--device", args.eval_device]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    return _run(cmd, log)


def summarize(eval_dir: Path, mapping: dict[str, str]) -> dict[str, Any]:
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    back = {v: k for k, v in mapping.items()}
    variants = {}
    for name, v in metrics["variants"].items():
        variants[name] = {
            "accuracy": round(v["accuracy"], 4),
            "ci95": [round(x, 4) for x in v["accuracy_ci"]],
            "macro_f1": round(v["macro_f1"], 4),
            "seconds": v.get("seconds"),
        }
    preds = _read_jsonl(eval_dir / "predictions.jsonl")
    gold = [back[p["gold"]] for p in preds]
    out: dict[str, Any] = {
        "n": metrics["n"],
        "scoring": metrics.get("scoring"),
        "variants": variants,
    }
    for name in ("tuned", "classic"):
        if preds and name in preds[0]:
            pred = [back.get(p[name], p[name]) for p in preds]
            pairs = Counter((g, q) for g, q in zip(gold, pred, strict=True) if g != q)
            out[f"{name}_top_confusions"] = [
                {"gold": g, "pred": q, "count": c} for (g, q), c in pairs.most_common(8)
            ]
            out[f"{name}_watched_pair"] = pair_confusions(gold, pred, *WATCHED_PAIR)
    if "classic" in variants and "tuned" in variants:
        out["tuned_over_classic"] = round(
            variants["tuned"]["accuracy"] / max(variants["classic"]["accuracy"], 1e-9), 3
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--method", default="lora", choices=["lora", "qlora", "full"])
    parser.add_argument("--config", help="default: configs/banking77/MODEL-METHOD.yaml")
    parser.add_argument("--per-class", type=parse_per_class, default=10, help="N or 'full'")
    parser.add_argument("--labels", default="readable", choices=["readable", "raw"])
    parser.add_argument("--system", default=BANKING_SYSTEM, help="system prompt ('' for none)")
    parser.add_argument("--seed", type=int, default=0, help="split and subsample seed")
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    parser.add_argument("--cache", default="/tmp/tuneforge-banking77", help="base split cache")
    parser.add_argument("--out", required=True)
    parser.add_argument("--eval-split", default="test", choices=["test", "val"])
    parser.add_argument("--baselines", default="zero,fewshot,classic")
    parser.add_argument(
        "--scoring", default="constrained", choices=["constrained", "exact", "auto"]
    )
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--limit", type=int, help="evaluate a seeded sample of N rows")
    parser.add_argument("--eval-device", default="cpu", help="cpu, cuda, cuda:1 (tuneforge eval)")
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for tuneforge train")
    args = parser.parse_args(argv)

    config = args.config or str(ROOT / f"configs/banking77/{args.model}-{args.method}.yaml")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    started = time.perf_counter()
    base = base_split(Path(args.csv), Path(args.cache), args.seed)
    data = out / "data"
    variant = make_variant(base, data, args.per_class, args.labels, args.system or None, args.seed)
    run = out / "run"
    train_s = train(config, data, run, args.overrides, log)
    result: dict[str, Any] = {
        "benchmark": "banking77",
        "model": args.model,
        "method": args.method,
        "config": os.path.relpath(config, ROOT) if config.startswith(str(ROOT)) else config,
        "overrides": args.overrides,
        "per_class": args.per_class or "full",
        "label_wording": args.labels,
        "system": args.system,
        "seed": args.seed,
        "splits": variant["splits"],
        "train_s": None if train_s is None else round(train_s, 1),
        "train_wall_s": json.loads((run / "manifest.json").read_text())["wall_seconds"],
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if not args.no_eval:
        eval_dir = out / f"eval-{args.eval_split}"
        eval_s = evaluate(run, data / f"{args.eval_split}.jsonl", eval_dir, args, log)
        result.update(eval_split=args.eval_split, eval_s=round(eval_s, 1))
        result.update(summarize(eval_dir, variant["mapping"]))
    result["total_s"] = round(time.perf_counter() - started, 1)
    name = f"result-{args.eval_split}.json" if not args.no_eval else "result-train.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
