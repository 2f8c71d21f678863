"""report.md for `prepare`: what came in, what was removed and why, and what went out."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from tuneforge.config import PrepareConfig

if TYPE_CHECKING:
    from tuneforge.data.prepare import PrepareOutcome

MAX_LISTED = 25
HIST_BINS = 10
BAR = 40


def _cell(text: str | None, width: int = 90) -> str:
    text = (text or "").replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _user_text(example: Any) -> str:
    if example.text is not None:
        return example.text
    return next(m["content"] for m in reversed(example.messages) if m["role"] == "user")


def _histogram(lengths: list[int]) -> list[str]:
    if not lengths:
        return ["(no examples)"]
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // HIST_BINS))
    counts = Counter((n - low) // width for n in lengths)
    peak = max(counts.values())
    lines = []
    for b in range(max(counts) + 1):
        lo = low + b * width
        bar = "█" * max(1 if counts[b] else 0, round(BAR * counts[b] / peak))
        lines.append(f"{lo:>6}–{lo + width - 1:<6} {bar} {counts[b]}")
    return lines


def render_report(cfg: PrepareConfig, outcome: PrepareOutcome, manifest: dict[str, Any]) -> str:
    rows = manifest["rows"]
    out = ["# Data preparation report", ""]
    out += [f"Task: **{outcome.task}** · seed {cfg.seed} · tokenizer `{cfg.tokenizer}`", ""]
    out += ["## Inputs", "", "| file | format | rows | sha256 |", "|---|---|---:|---|"]
    files = outcome.inputs + ([outcome.test_file] if outcome.test_file else [])
    out += [
        f"| `{i.path}` | {i.format} | {i.records} | `{(i.sha256 or '-')[:16]}` |" for i in files
    ]
    out += ["", "## Rows", "", "| step | rows |", "|---|---:|"]
    out += [
        f"| read | {rows['read']} |",
        f"| invalid (rejected) | {rows['invalid']} |",
        f"| exact duplicates removed | {rows['duplicate']} |",
        f"| conflicting labels removed | {rows['conflict']} |",
        f"| near-duplicates removed | {rows['near_duplicate']} |",
        f"| removed from train: leaked into the test file | {rows['leaked_into_test']} |",
        f"| label too rare to stratify | {rows['rare_label']} |",
        f"| **written (train+val{'+test' if not outcome.test_file else ''})** | **{rows['written']}** |",
    ]
    out += [
        "",
        "## Splits",
        "",
        "| split | examples | tokens p50 | p95 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, stats in manifest["token_lengths"].items():
        out.append(
            f"| {name} | {manifest['splits'][name]} | {stats['p50']} | {stats['p95']} | {stats['max']} |"
        )
    if outcome.labels is not None:
        out += _label_table(outcome)
    all_lengths = [n for v in outcome.token_lengths.values() for n in v]
    out += ["", "## Length (tokens per example, chat template included)", "", "```"]
    out += [*_histogram(all_lengths), "```"]
    out += (
        _duplicates(outcome) + _conflicts(outcome, cfg.conflicts) + _near(outcome) + _leaks(outcome)
    )
    out += _rejected(outcome)
    return "\n".join(out) + "\n"


def _label_table(outcome: PrepareOutcome) -> list[str]:
    per_split = {name: Counter(e.label for e in rows) for name, rows in outcome.splits.items()}
    totals = Counter()
    for counts in per_split.values():
        totals.update(counts)
    out = ["", f"## Labels ({len(outcome.labels or [])})", ""]
    if totals:
        (top, most), least = totals.most_common(1)[0], min(totals.values())
        if most > 10 * least:
            out += [f"> Imbalanced: `{top}` has {most} examples, the rarest label {least}.", ""]
    out += ["| label | train | val | test | total |", "|---|---:|---:|---:|---:|"]
    for label, total in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
        cells = " | ".join(str(per_split[s][label]) for s in ("train", "val", "test"))
        out.append(f"| {_cell(label, 50)} | {cells} | {total} |")
    return out


def _duplicates(outcome: PrepareOutcome) -> list[str]:
    out = ["", f"## Exact duplicates ({len(outcome.duplicates)} removed)", ""]
    if not outcome.duplicates:
        return [*out, "None."]
    out += ["Compared after Unicode normalization, case folding and whitespace collapsing.", ""]
    out += ["| removed | kept | text |", "|---|---|---|"]
    for dropped, kept in outcome.duplicates[:MAX_LISTED]:
        out.append(f"| {dropped.where} | {kept.where} | {_cell(_user_text(dropped))} |")
    if len(outcome.duplicates) > MAX_LISTED:
        out.append(f"\n… and {len(outcome.duplicates) - MAX_LISTED} more.")
    return out


def _conflicts(outcome: PrepareOutcome, policy_name: str) -> list[str]:
    policy = {"drop": "all dropped", "majority": "majority label kept", "keep": "all kept"}
    out = ["", f"## Label conflicts ({len(outcome.conflicts)})", ""]
    if not outcome.conflicts:
        return [*out, "None."]
    out += [
        f"The same text under different labels (policy `{policy_name}`: {policy[policy_name]}).",
        "",
    ]
    out += ["| text | labels (where) |", "|---|---|"]
    for members in outcome.conflicts:  # every conflict is listed: each is a labelling decision
        labels = "; ".join(f"`{m.label}` ({m.where})" for m in members)
        out.append(f"| {_cell(_user_text(members[0]))} | {_cell(labels, 200)} |")
    return out


def _near(outcome: PrepareOutcome) -> list[str]:
    pairs = outcome.near_duplicates
    fate = (
        f"{len(outcome.near_dropped)} removed"
        if outcome.near_dropped
        else "kept; pass --near-dedup drop to remove them"
    )
    out = ["", f"## Near-duplicates ({len(pairs)} pairs, {fate})", ""]
    if not pairs:
        return [*out, "None."]
    mixed = [p for p in pairs if p.first.label != p.second.label]
    if mixed:
        out += [f"{len(mixed)} pairs carry **different labels**: likely labelling noise.", ""]
    out += ["| similarity | first | second | labels |", "|---:|---|---|---|"]
    for pair in (mixed + [p for p in pairs if p not in mixed])[:MAX_LISTED]:
        labels = "" if pair.first.label is None else f"`{pair.first.label}` / `{pair.second.label}`"
        out.append(
            f"| {pair.similarity:.2f} | {pair.first.where}: {_cell(_user_text(pair.first), 60)} "
            f"| {pair.second.where}: {_cell(_user_text(pair.second), 60)} | {labels} |"
        )
    if len(pairs) > MAX_LISTED:
        out.append(f"\n… and {len(pairs) - MAX_LISTED} more.")
    out += ["", "Near-duplicate groups are never split across train, val and test."]
    return out


def _leaks(outcome: PrepareOutcome) -> list[str]:
    if outcome.test_file is None:
        return []
    out = ["", f"## Leakage into the test file ({len(outcome.leaked)} removed from train/val)", ""]
    if not outcome.leaked:
        return [*out, "None: no training example is identical or near-identical to a test one."]
    out += ["| similarity | removed | test example |", "|---:|---|---|"]
    for leak in outcome.leaked[:MAX_LISTED]:
        out.append(
            f"| {leak.similarity:.2f} | {leak.first.where}: {_cell(_user_text(leak.first), 60)} "
            f"| {leak.second.where} |"
        )
    return out


def _rejected(outcome: PrepareOutcome) -> list[str]:
    problems = outcome.rejected + outcome.rare_dropped
    if not problems:
        return []
    out = ["", f"## Rejected rows ({len(problems)}, written to rejected.jsonl)", ""]
    out += [f"- {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        out.append(f"- … and {len(problems) - MAX_LISTED} more")
    return out
