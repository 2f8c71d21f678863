"""`export_run`: turn a run directory into a deployable artifact, and prove it still behaves.

    check inputs (nothing loads before they pass) -> load the trained model -> its predictions
    and answer logits on the held-out rows (the reference) -> build the artifact in a temp
    directory -> reload it the way a user would -> compare with the reference -> tuneforge.json
    + MODEL_CARD.md -> rename into place

A failed export (bad input, a crash) leaves nothing behind. An export that builds but fails its
round-trip check is kept, for inspection, as `OUT.failed-validation/` (its tuneforge.json holds
the figures) and never at OUT itself; the command exits with code 3.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneforge import __version__
from tuneforge.errors import TuneforgeError
from tuneforge.export import card as cards
from tuneforge.export.validate import Agreement, ValidationFailed
from tuneforge.fsutil import check_output_dir
from tuneforge.models.trained import RunDir, inspect_run

KINDS = ("adapter", "merged", "int4", "gguf", "ollama")
INT4_QUANTS = ("nf4", "fp4")
DEFAULT_ROWS = 64
STRICT, LOOSE = 0.99, 0.90
"""Default minimum agreement: lossless-ish exports vs 4/5-bit ones."""


@dataclass
class ExportResult:
    kind: str
    out: Path
    files: dict[str, int]
    validation: Agreement
    metadata: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    run: RunDir
    kind: str
    out: Path
    quant: str | None
    dtype: str
    rows: list[dict[str, Any]]
    data_path: Path
    name: str
    min_agreement: float
    system_prompt: str | None = None
    template: str | None = None


def failed_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.failed-validation"


def _model_name(text: str) -> str:
    """A name Ollama and vLLM accept: lowercase letters, digits, - _ ."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    name = re.sub(r"[._-]{2,}", "-", name).strip("-._")  # "a/../b" -> "a-b", not "a-..-b"
    return name or "tuneforge-model"


def _check_quant(kind: str, quant: str | None, dtype: str | None) -> tuple[str | None, str]:
    from tuneforge.export.gguf_writer import check_quant
    from tuneforge.export.merge import check_dtype

    if dtype is not None and kind != "merged":
        raise TuneforgeError(f"--dtype applies to --to merged only (not {kind})")
    dtype = dtype or "float32"
    check_dtype(dtype)
    if kind in ("gguf", "ollama"):
        return check_quant(quant or ("f16" if kind == "gguf" else "q8_0")), dtype
    if kind == "int4":
        quant = (quant or "nf4").lower()
        if quant not in INT4_QUANTS:
            raise TuneforgeError(f"--quant {quant!r} for --to int4: expected nf4 or fp4")
        return quant, dtype
    if quant is not None:
        raise TuneforgeError(
            f"--quant applies to --to int4|gguf|ollama, not {kind}"
            + (" (use --dtype)" if kind == "merged" else "")
        )
    return None, dtype


def _plan(
    run_dir: str | Path,
    kind: str,
    out: str | Path,
    quant: str | None,
    dtype: str | None,
    data: str | Path | None,
    rows: int,
    min_agreement: float | None,
    name: str | None,
    force: bool,
) -> _Plan:
    from tuneforge.export.gguf_writer import LOSSLESS_QUANTS
    from tuneforge.export.merge import check_mergeable
    from tuneforge.export.validate import read_rows

    if kind not in KINDS:
        raise TuneforgeError(f"--to {kind!r}: expected one of {', '.join(KINDS)}")
    quant, dtype = _check_quant(kind, quant, dtype)
    run = inspect_run(run_dir)
    if kind == "adapter" and run.weights != "adapter":
        raise TuneforgeError(
            f"--to adapter: {run.path} is a full fine-tune (no adapter); export --to merged"
        )
    if kind != "adapter":
        check_mergeable(run, kind)
    out = Path(out)
    data = run.test_file(data, "to validate the export on")
    check_output_dir(out, overwrite=force, inputs=[run.path, data])
    validation_rows = read_rows(data, rows)
    if min_agreement is None:
        lossy = kind == "int4" or (kind in ("gguf", "ollama") and quant not in LOSSLESS_QUANTS)
        min_agreement = LOOSE if lossy else STRICT
    if not 0 <= min_agreement <= 1:
        raise TuneforgeError(f"--min-agreement must be between 0 and 1 (got {min_agreement})")
    plan = _Plan(
        run, kind, out, quant, dtype, validation_rows, Path(data),
        _model_name(name or run.path.name), min_agreement,
    )  # fmt: skip
    if kind == "ollama":
        _plan_template(plan)
    return plan


def _plan_template(plan: _Plan) -> None:
    """Derive and prove the Ollama TEMPLATE before any weights load (it is cheap)."""
    from tuneforge.export import ollama
    from tuneforge.models.tokenizer import load_saved_tokenizer
    from tuneforge.train.data import read_split

    tokenizer = load_saved_tokenizer(plan.run.path)
    train = plan.run.data_dir / "train.jsonl" if plan.run.data_dir is not None else None
    rows = read_split(train) if train is not None and train.is_file() else plan.rows
    plan.system_prompt = ollama.shared_system_prompt(rows)
    plan.template = ollama.go_template(ollama.derive_parts(tokenizer))
    ollama.check_template(plan.template, tokenizer, plan.system_prompt)


# ---------------------------------------------------------------------------------------------
# one function per format: build into `tmp`, return the reloaded model (+ GGUF tokenizer)
# ---------------------------------------------------------------------------------------------


def _build_adapter(plan: _Plan, tmp: Path, model: Any, tokenizer: Any, meta: dict) -> Any:
    from tuneforge.export.merge import load_adapter_export
    from tuneforge.models.tokenizer import save_tokenizer

    for name in ("adapter_config.json", "adapter_model.safetensors", "config.yaml"):
        shutil.copyfile(plan.run.path / name, tmp / name)
    if (plan.run.path / "data" / "labels.json").is_file():
        (tmp / "data").mkdir()
        shutil.copyfile(plan.run.path / "data" / "labels.json", tmp / "data" / "labels.json")
    save_tokenizer(tokenizer, tmp)
    meta["vllm"] = cards.vllm_check(plan.run, plan.out, plan.name)
    return load_adapter_export(tmp), None


def _build_merged(plan: _Plan, tmp: Path, model: Any, tokenizer: Any, meta: dict) -> Any:
    from tuneforge.export.merge import load_hf, merged_model, save_int4, save_merged

    merged = merged_model(model, plan.run)
    if plan.kind == "int4":
        assert plan.quant is not None
        save_int4(merged, tokenizer, tmp, plan.quant)
    else:
        save_merged(merged, tokenizer, tmp, plan.dtype)
    del merged
    return load_hf(tmp), None


def _build_gguf(plan: _Plan, tmp: Path, model: Any, tokenizer: Any, meta: dict) -> Any:
    from tuneforge.export.gguf_writer import check_readback_config, write_gguf
    from tuneforge.export.merge import load_gguf, merged_model

    merged = merged_model(model, plan.run)
    base = meta["base_model"]
    source = Path(base["path"]) if base.get("source_kind") in ("packaged", "gguf") else None
    path = tmp / f"model-{plan.quant}.gguf"
    written = write_gguf(
        merged, tokenizer, path, plan.quant or "f16", name=plan.name, source_gguf=source,
        license=base.get("license"),
    )  # fmt: skip
    check_readback_config(merged.config, path)
    meta["gguf"] = {
        "file": path.name,
        "architecture": written.architecture,
        "tensor_types": written.tensor_types,
        "tokenizer_from": written.tokenizer_from,
    }
    del merged
    if plan.kind == "ollama":
        _write_modelfile(plan, tmp, path.name, tokenizer, meta)
    return load_gguf(path)


def _write_modelfile(plan: _Plan, tmp: Path, gguf_name: str, tokenizer: Any, meta: dict) -> None:
    from tuneforge.export import ollama
    from tuneforge.models.tokenizer import stop_token_ids

    assert plan.template is not None
    stops = [str(tokenizer.convert_ids_to_tokens(i)) for i in stop_token_ids(tokenizer)]
    text = ollama.modelfile(gguf_name, plan.template, stops, plan.system_prompt)
    (tmp / "Modelfile").write_text(text, encoding="utf-8")
    meta["ollama"] = {
        "modelfile": "Modelfile",
        "stop": stops,
        "system": plan.system_prompt,
        "create": f"ollama create {plan.name} -f {plan.out / 'Modelfile'}",
        "run": f"ollama run {plan.name}",
    }


_BUILDERS = {
    "adapter": _build_adapter,
    "merged": _build_merged,
    "int4": _build_merged,
    "gguf": _build_gguf,
    "ollama": _build_gguf,
}


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def _files(directory: Path) -> dict[str, dict[str, Any]]:
    from tuneforge.fsutil import sha256_file

    return {
        str(path.relative_to(directory)): {
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _usage(plan: _Plan, meta: dict[str, Any]) -> list[str]:
    out = plan.out
    if plan.kind == "adapter":
        lines = [
            "```python",
            "from peft import PeftModel  # on the base model it was trained on (see above)",
            f'model = PeftModel.from_pretrained(base_model, "{out}")',
            "```",
        ]
        vllm = meta["vllm"]
        if vllm["loadable"]:
            return [*lines, "", f"vLLM: `{vllm['command']}`"]
        return [*lines, "", f"vLLM: not loadable ({'; '.join(vllm['problems'])})."]
    if plan.kind in ("merged", "int4"):
        return [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("{out}")'
            + ("  # needs bitsandbytes" if plan.kind == "int4" else ""),
            f'tokenizer = AutoTokenizer.from_pretrained("{out}")',
            "```",
        ]
    gguf = meta["gguf"]["file"]
    if plan.kind == "gguf":
        return [f"llama.cpp: `llama-cli -m {out / gguf} -cnv` (the chat template is embedded)."]
    return [f"`{meta['ollama']['create']}`, then `{meta['ollama']['run']}`."]


def export_run(
    run_dir: str | Path,
    to: str,
    out: str | Path,
    *,
    quant: str | None = None,
    dtype: str | None = None,
    data: str | Path | None = None,
    validate_rows: int = DEFAULT_ROWS,
    min_agreement: float | None = None,
    name: str | None = None,
    device: str = "cpu",
    force: bool = False,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export the run in `run_dir` as `to` into `out`, validated (see the module docstring)."""
    from tuneforge.export import validate
    from tuneforge.fsutil import atomic_directory
    from tuneforge.models.trained import load_trained

    started = time.perf_counter()
    plan = _plan(run_dir, to, out, quant, dtype, data, validate_rows, min_agreement, name, force)
    run = plan.run
    log(f"loading {run.path} ({run.config.method.kind} on {run.config.model.name})")
    model, tokenizer, _ = load_trained(run.path, device=device)
    ref = validate.reference(model, tokenizer, plan.rows, run.labels)
    log(f"reference: {len(plan.rows)} rows from {plan.data_path} in {ref.seconds:.1f} s")
    meta: dict[str, Any] = {
        "tuneforge_version": __version__,
        "format": plan.kind,
        "quant": plan.quant,
        "dtype": plan.dtype if plan.kind == "merged" else None,
        "name": plan.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"path": str(run.path.resolve()), "method": run.config.method.kind,
                "task": run.task, "labels": run.labels},
        "base_model": cards.base_model_info(run),
        "dataset": cards.dataset_info(run),
        "training": cards.training_info(run),
        "eval": cards.eval_summary(run),
        "system_prompt": plan.system_prompt,
        "merge_note": (
            "QLoRA: merged onto the NF4 base dequantized to float (the weights the adapter was "
            "trained against); the agreement is measured against the 4-bit base + adapter"
            if run.config.method.kind == "qlora" and plan.kind != "adapter" else None
        ),
    }  # fmt: skip
    warnings: list[str] = []
    failed = failed_dir(plan.out)
    with atomic_directory(plan.out, overwrite=force) as tmp:
        log(f"writing {plan.kind}" + (f" ({plan.quant})" if plan.quant else ""))
        reloaded, export_tokenizer = _BUILDERS[plan.kind](plan, tmp, model, tokenizer, meta)
        del model
        for path in tmp.rglob("*"):
            # safetensors writes 0600; an export is meant to be shared (ollama create, vLLM).
            path.chmod(0o755 if path.is_dir() else 0o644)
        files = _files(tmp)
        log("validating the reloaded export against the trained model")
        result = validate.compare(
            ref, reloaded, tokenizer, run.labels, plan.min_agreement,
            export_tokenizer=export_tokenizer,
        )  # fmt: skip
        del reloaded
        meta["files"] = files
        meta["validation"] = {**result.to_dict(), "data": str(plan.data_path)}
        meta["export_seconds"] = round(time.perf_counter() - started, 2)
        if plan.kind == "adapter" and not meta["vllm"]["loadable"]:
            warnings += [f"not loadable by vLLM: {p}" for p in meta["vllm"]["problems"]]
        meta["warnings"] = warnings
        (tmp / "tuneforge.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        card = cards.model_card(meta, run, _usage(plan, meta))
        (tmp / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        if not result.passed:
            if failed.exists():
                shutil.rmtree(failed)
            tmp.rename(failed)
            raise ValidationFailed(
                f"the {plan.kind} export does not behave like the trained model: "
                f"{result.summary()} (required agreement {100 * plan.min_agreement:.0f} %); "
                f"kept for inspection in {failed}/ (see tuneforge.json), not written to {plan.out}"
            )
    if failed.exists():
        shutil.rmtree(failed, ignore_errors=True)  # a stale failure of an earlier attempt
    instructions = []
    if plan.kind == "adapter":
        instructions.append(meta["vllm"]["command"])
    if plan.kind == "ollama":
        instructions += [meta["ollama"]["create"], meta["ollama"]["run"]]
    sizes = {name: info["bytes"] for name, info in files.items()}
    return ExportResult(plan.kind, plan.out, sizes, result, meta, warnings, instructions)
