"""What travels with every export: `tuneforge.json` (machine-readable) and `MODEL_CARD.md`.

Both are built from the run directory alone: the run's manifest (base model, its sha256, the
dataset hashes), its config (hyperparameters), the eval report if `tuneforge eval` wrote one
(RUN_DIR/eval/metrics.json: metrics with 95 % intervals, top confusions, the forgetting check),
and this export's own round-trip validation. Nothing is invented: a missing piece is written
as "not evaluated" / "unknown", with the command that would fill it in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.models.trained import RunDir

EVAL_METRICS = Path("eval") / "metrics.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or unreadable: the card says so instead of failing the export
    return data if isinstance(data, dict) else None


def base_model_info(run: RunDir) -> dict[str, Any]:
    """Base model name, source, sha256 (of the GGUF, or of a directory's weights), license."""
    from tuneforge.fsutil import sha256_file

    manifest = _read_json(run.path / "manifest.json") or {}
    model = manifest.get("model") or {}
    info = {
        "name": run.config.model.name,
        "source_kind": model.get("source_kind"),
        "path": model.get("path"),
        "weights_dir": model.get("weights_dir"),
        "sha256": model.get("sha256"),
        "license": None,
    }
    path = Path(str(info["path"])) if info["path"] else None
    if info["sha256"] is None and path is not None and (path / "model.safetensors").is_file():
        info["sha256"] = sha256_file(path / "model.safetensors")
    if path is not None and path.is_file():
        info["license"] = _gguf_license(path)
    return info


def _gguf_license(path: Path) -> str | None:
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get("general.license")
        return str(field.contents()) if field is not None else None
    except Exception:  # a license is nice to have; an unreadable field must not fail an export
        return None


def dataset_info(run: RunDir) -> dict[str, Any]:
    manifest = _read_json(run.path / "manifest.json") or {}
    return dict(manifest.get("dataset") or {"dir": run.config.data.dir})


def training_info(run: RunDir) -> dict[str, Any]:
    manifest = _read_json(run.path / "manifest.json") or {}
    result = manifest.get("result") or {}
    return {
        "steps": result.get("steps"),
        "final_train_loss": result.get("final_train_loss"),
        "best_val_loss": result.get("best_val_loss"),
        "trainable_parameters": (manifest.get("parameters") or {}).get("trainable"),
        "config": run.config.model_dump(mode="json"),
    }


def eval_summary(run: RunDir) -> dict[str, Any] | None:
    """The parts of RUN_DIR/eval/metrics.json a card reports, or None if not evaluated."""
    results = _read_json(run.path / EVAL_METRICS)
    if not results or not isinstance(results.get("variants"), dict):
        return None
    from tuneforge.eval.verdict import primary_metric

    key, name = primary_metric(results)
    variants = {}
    for variant, values in results["variants"].items():
        block = (values.get("json") or {}) if key.startswith("field_") else values
        variants[variant] = {"value": block.get(key), "ci": block.get(f"{key}_ci")}
    return {
        "file": str(run.path / EVAL_METRICS),
        "n": results.get("n"),
        "metric": key,
        "metric_name": name,
        "variants": variants,
        "confusions": (results.get("confusions") or [])[:5],
        "forgetting": results.get("forgetting"),
    }


def vllm_check(run: RunDir, out: Path, name: str) -> dict[str, Any]:
    """Whether vLLM can serve the adapter (`--enable-lora`), and the command that would."""
    method = run.config.method
    adapter = _read_json(run.path / "adapter_config.json") or {}
    problems = []
    if method.kind not in ("lora", "qlora", "dora"):
        problems.append(f"vLLM serves LoRA adapters only; this is a {method.kind} adapter")
    if adapter.get("use_dora") or method.kind == "dora":
        problems.append("vLLM does not load DoRA adapters (use_dora)")
    if adapter.get("modules_to_save") or method.modules_to_save:
        modules = adapter.get("modules_to_save") or method.modules_to_save
        problems.append(f"vLLM ignores modules_to_save ({', '.join(modules)})")
    base = run.config.model.name
    info = base_model_info(run)
    if info.get("source_kind") in ("packaged", "gguf") and info.get("weights_dir"):
        base = str(info["weights_dir"])  # vLLM needs the HF weights; tuneforge's converted copy
    rank = int(adapter.get("r") or method.r)
    command = f"vllm serve {base} --enable-lora --lora-modules {name}={out.resolve()}"
    if rank > 16:  # vLLM's default --max-lora-rank is 16
        command += f" --max-lora-rank {rank}"
    notes = []
    if method.kind == "qlora":
        notes.append("trained on a 4-bit base; vLLM serves it on the unquantized base")
    return {"loadable": not problems, "problems": problems, "notes": notes, "command": command}


# ---------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _ci(ci: Any) -> str:
    return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def _eval_section(summary: dict[str, Any] | None, run: RunDir) -> list[str]:
    if summary is None:
        return [
            "Not evaluated: no eval report in the run directory. Run "
            f"`tuneforge eval {run.path}` and export again to include metrics here.",
        ]
    lines = [
        f"From `{summary['file']}` ({summary['n']} test examples); {summary['metric_name']} in "
        "percent with 95 % bootstrap intervals.",
        "",
        f"| variant | {summary['metric_name']} |",
        "|---|---|",
    ]
    for variant, value in summary["variants"].items():
        lines.append(f"| {variant} | {_pct(value['value'])}{_ci(value['ci'])} |")
    return lines


def _failure_section(summary: dict[str, Any] | None) -> list[str]:
    if summary is None:
        return ["Unknown: not evaluated (top confusions and the forgetting check come from eval)."]
    lines = []
    for c in summary["confusions"]:
        lines.append(
            f"- `{c['gold']}` predicted as `{c['pred']}`: {c['count']} "
            f"time{'s' if c['count'] != 1 else ''} "
            f"({100 * c['share_of_gold']:.0f} % of `{c['gold']}`)"
        )
    forgetting = summary.get("forgetting")
    if forgetting:
        lost = forgetting.get("lost") or []
        lines.append(
            f"- General-ability check (golden set, n={forgetting['tuned']['n']}): base "
            f"{_pct(forgetting['base']['score'])} %, tuned {_pct(forgetting['tuned']['score'])} %"
            + (f"; {len(lost)} item(s) the base got right are now wrong" if lost else "")
        )
    else:
        lines.append("- Forgetting check: not run (`tuneforge eval --forgetting`).")
    return lines or ["No confusions recorded."]


def _validation_lines(validation: dict[str, Any]) -> list[str]:
    lines = [
        f"Reloaded and run on {validation['rows']} held-out rows against the trained (unmerged) "
        "model:",
        "",
        f"- prediction agreement: {_pct(validation['agreement'])} % "
        f"(required: {_pct(validation['min_agreement'])} %)",
        f"- next-token agreement on answer tokens: {_pct(validation['token_agreement'])} %",
        f"- max |logit difference|: {validation['max_logit_diff']:.3g}",
    ]
    if validation.get("export_accuracy") is not None:
        lines.append(
            f"- exact-match accuracy on those rows: trained {_pct(validation['trained_accuracy'])}"
            f" %, exported {_pct(validation['export_accuracy'])} %"
        )
    if validation.get("merge_note"):
        lines.append(f"- {validation['merge_note']}")
    if validation.get("tokenizer_agreement") is not None:
        lines.append(
            f"- embedded tokenizer encodes identically: {_pct(validation['tokenizer_agreement'])} %"
            f"; chat template identical: {validation['chat_template_equal']}"
        )
    return lines


def model_card(meta: dict[str, Any], run: RunDir, usage: list[str]) -> str:
    """MODEL_CARD.md for an export described by `meta` (the tuneforge.json content)."""
    base, data, train = meta["base_model"], meta["dataset"], meta["training"]
    cfg = train["config"]
    method, loop = cfg["method"], cfg["train"]
    summary = meta.get("eval")
    fmt = meta["format"] + (f" ({meta['quant']})" if meta.get("quant") else "")
    if run.labels is not None:
        shown = ", ".join(f"`{label}`" for label in run.labels[:30])
        task = f"Classification into {len(run.labels)} labels: {shown}" + (
            " ..." if len(run.labels) > 30 else ""
        )
    else:
        task = "Generation: answers in the style of the training conversations."
    hyper = (
        f"method `{method['kind']}`"
        + (f", r={method['r']}, alpha={method['alpha']:g}, dropout={method['dropout']:g}, "
           f"targets {method['target_modules']}" if method["kind"] in ("lora", "qlora", "dora")
           else "")
        + f"; lr {loop['lr']:g}, batch {loop['batch_size']}x{loop['grad_accum']}, "
        f"{'max_steps ' + str(loop['max_steps']) if loop['max_steps'] else str(loop['epochs']) + ' epochs'}, "
        f"{loop['scheduler']} schedule, seed {loop['seed']}; max_seq_len {cfg['model']['max_seq_len']}"
    )  # fmt: skip
    lines = [
        f"# {meta['name']}: {fmt} export",
        "",
        f"A fine-tune of `{base['name']}` made with tuneforge {meta['tuneforge_version']}.",
        "",
        "## Base model",
        "",
        f"- name: `{base['name']}` ({base.get('source_kind') or 'unknown source'})",
        f"- file: `{base.get('path')}`",
        f"- sha256: `{base.get('sha256') or 'unknown'}`",
        f"- license: {base.get('license') or 'unknown: check the base model license'}",
        "",
        "## Training",
        "",
        f"- {hyper}",
        f"- steps: {train.get('steps')}, final train loss: {train.get('final_train_loss')}",
        f"- dataset: `{data.get('dir')}`; manifest sha256 `{data.get('manifest_sha256') or 'none'}`,"
        f" train.jsonl sha256 `{data.get('train_sha256')}` ({data.get('train_examples')} examples)",
        "",
        "## Evaluation",
        "",
        *_eval_section(summary, run),
        "",
        "## Known failure modes",
        "",
        *_failure_section(summary),
        "",
        "## Export check",
        "",
        *_validation_lines({**meta["validation"], "merge_note": meta.get("merge_note")}),
        "",
        "## Intended use",
        "",
        f"- {task}",
        "- Prompt it exactly as in training: the chat template shipped with this export"
        + (f", system prompt: {meta['system_prompt']!r}" if meta.get("system_prompt") else ""),
        "- Not for inputs unlike the training data, or decisions without human review: a small "
        "fine-tuned model is confidently wrong on out-of-distribution text.",
        "",
        "## Usage",
        "",
        *usage,
        "",
        "## License",
        "",
        f"The weights derive from `{base['name']}` and inherit its license "
        f"({base.get('license') or 'unknown'}); the training data's terms apply as well.",
    ]
    return "\n".join(lines) + "\n"
