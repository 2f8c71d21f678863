"""`tuneforge demo`: the whole pipeline on the embedded default, in one command.

prepare the shipped support-intent dataset -> prompt the base model (zero-shot, few-shot) ->
LoRA train -> evaluate the tune against every baseline -> export the adapter with its model
card -> serve base + adapter on loopback, ask one question per intent, stop -> the "did it
help?" table and where every artifact is. Each stage calls the same library function as its
own verb, so what the demo shows is what the verbs do.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markdown import Markdown
from rich.rule import Rule
from rich.table import Table

from tuneforge.cli.common import console, plain_log, quiet_libraries, report_errors
from tuneforge.config import PrepareConfig, TrainConfig, resolve
from tuneforge.errors import TuneforgeError

DEMO_RECIPE = "train.yaml"
"""The demo's training recipe, shipped next to its dataset (tuneforge/data/demo/)."""
ADAPTER_NAME = "support"
DEMO_BASELINES = ("zero", "fewshot", "classic")
"""rag is left to `tuneforge eval` (one long prompt per example: minutes on 2 cores)."""


def _stage(number: int, title: str) -> float:
    console.print(Rule(f"[bold]{number} · {title}[/]"))
    return time.perf_counter()


def _done(started: float) -> None:
    console.print(f"[dim]({time.perf_counter() - started:.0f} s)[/]")


DEMO_ENTRIES = ("data", "run", "eval", "export")  # what the demo writes into -o


def demo_recipe() -> Path:
    return Path(str(files("tuneforge.data").joinpath("demo", DEMO_RECIPE)))


@report_errors
def demo_command(
    output_dir: str = typer.Option("demo-output", "-o", "--output", help="Where artifacts go."),
    model: str = typer.Option(
        "smollm2-135m", "--model", help="Base model: packaged name, directory, .gguf or hub id."
    ),
    method: str = typer.Option(
        "lora", "--method", help="lora, qlora, dora (served adapters); full, ia3, ... train+eval."
    ),
    seed: int = typer.Option(0, "--seed"),
    overrides: list[str] = typer.Argument(
        None, help="Training overrides for the demo recipe, e.g. train.epochs=2"
    ),
    force: bool = typer.Option(True, "--force/--no-force", help="Replace an earlier demo."),
) -> None:
    """Run prepare -> baselines -> train -> eval -> export -> serve on the shipped demo dataset."""
    from tuneforge.data.demo_data import demo_path

    out = Path(output_dir)
    cfg = resolve(
        TrainConfig,
        demo_recipe(),
        [
            f"model.name={model}",
            f"method.kind={method}",
            f"data.dir={out / 'data'}",
            f"train.seed={seed}",
            *(overrides or []),
        ],
    )
    if out.exists() and not out.is_dir():
        raise TuneforgeError(f"{out}: exists and is not a directory; choose another -o")
    if out.is_dir() and any(out.iterdir()):
        # The demo replaces these four; anything else means -o points at the user's own folder.
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise TuneforgeError(
                f"{out}: holds files that are not a demo's ({shown}); the demo writes "
                f"{', '.join(DEMO_ENTRIES)} there: choose a new -o"
            )
        if not force:
            raise TuneforgeError(f"{out}: already holds a demo; pass --force or choose another -o")
    quiet_libraries()
    started = time.perf_counter()
    data_dir = _prepare(demo_path(), out / "data", model, seed)
    before = _prompting(model, data_dir, seed)
    run_dir = _train(cfg, out / "run")
    results = _evaluate(run_dir, out / "eval")
    adapter = _export(run_dir, out / "export", method)
    if adapter is not None:
        _serve(model, run_dir, data_dir)
    _finish(results, before, out, run_dir, adapter, time.perf_counter() - started)


def _prepare(source: Path, data_dir: Path, model: str, seed: int) -> Path:
    from tuneforge.data.prepare import prepare
    from tuneforge.models.load import load_tokenizer

    t = _stage(1, "prepare: validate, clean, dedupe, split")
    cfg = resolve(
        PrepareConfig,
        base={
            "inputs": [str(source)],
            "output_dir": str(data_dir),
            "tokenizer": model,
            "seed": seed,
            "force": True,
        },
        source="tuneforge demo",
    )
    with console.status(f"loading tokenizer {model}"):
        tokenizer = load_tokenizer(model)
    outcome = prepare(cfg, tokenizer)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in outcome.splits.items())
    console.print(f"{source.name}: {sizes} -> {data_dir}/ (report.md, manifest.json)")
    _done(t)
    return data_dir


def _prompting(model: str, data_dir: Path, seed: int) -> list[Any]:
    from tuneforge.config import ModelConfig
    from tuneforge.eval.prompting import read_classification_split, score_prompting
    from tuneforge.models.load import load_model

    t = _stage(2, "before training: prompt the base model")
    train, test, labels = read_classification_split(data_dir)
    with console.status(f"loading {model}"):
        base, tokenizer, _ = load_model(ModelConfig(name=model))
    with console.status(f"zero-shot and 8-shot prompts on {len(test)} test examples"):
        scores = score_prompting(base, tokenizer, train, test, labels, seed=seed)
    del base
    for s in scores:
        console.print(
            f"{s.name}: accuracy {100 * s.accuracy:.1f} % "
            f"(95 % CI {100 * s.accuracy_ci[0]:.0f}–{100 * s.accuracy_ci[1]:.0f}), "
            f"{s.prompt_tokens:.0f}-token prompts, {s.seconds:.1f} s",
            highlight=False,
        )
    _done(t)
    return scores


def _train(cfg: TrainConfig, run_dir: Path) -> Path:
    from tuneforge.cli.train import summary_line, train_with_progress

    t = _stage(3, f"train: {cfg.method.kind} on {cfg.model.name}")
    result = train_with_progress(cfg, run_dir, force=True)
    console.print(summary_line(result))
    _done(t)
    return result.run_dir


def _evaluate(run_dir: Path, eval_dir: Path) -> dict[str, Any]:
    from tuneforge.cli.eval import print_results
    from tuneforge.eval.run import evaluate
    from tuneforge.eval.verdict import verdict

    t = _stage(4, "evaluate: tuned vs zero-shot, few-shot and an embedding classifier")
    results = evaluate(
        run_dir,
        None,
        eval_dir,
        DEMO_BASELINES,
        force=True,
        variation=False,
        log=plain_log,
    )
    print_results(results)
    results["verdict"] = verdict(results)
    _done(t)
    return results


def _export(run_dir: Path, export_dir: Path, method: str) -> Path | None:
    from tuneforge.export.run import export_run

    t = _stage(5, "export: adapter + model card, reloaded and checked")
    if method not in ("lora", "qlora", "dora"):
        console.print(f"{method}: not a servable adapter; export and serve skipped")
        return None
    result = export_run(
        run_dir,
        "adapter",
        export_dir,
        force=True,
        log=plain_log,
    )
    console.print(f"validation: {result.validation.summary()} -> {result.out}/ (MODEL_CARD.md)")
    _done(t)
    return result.out


def _serve(model: str, run_dir: Path, data_dir: Path) -> None:
    import httpx

    from tuneforge.eval.prompting import read_classification_split
    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import background_server, build_engine

    t = _stage(6, f"serve: {model} + adapter {ADAPTER_NAME!r} on loopback, one question per intent")
    _, test, labels = read_classification_split(data_dir)
    questions = {}
    for row in test:
        questions.setdefault(row["label"], row)
    with console.status("loading the server"):
        engine = build_engine(model, {ADAPTER_NAME: run_dir})
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, expand=True)
    table.add_column("intent", no_wrap=True)
    table.add_column("question", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("answer", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    right = 0
    with background_server(create_app(engine, engine.catalog)) as url:
        console.print(
            f"serving {url}/v1 (OpenAI API): models {engine.catalog.base.id}, {ADAPTER_NAME}"
        )
        with httpx.Client(base_url=url, timeout=120) as client:
            for label in labels:
                row = questions.get(label)
                if row is None:
                    continue
                reply = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": ADAPTER_NAME,
                        "messages": row["messages"][:-1],
                        "max_tokens": 16,
                        "tuneforge": {"constrain_to_labels": True},
                    },
                )
                reply.raise_for_status()
                choice = reply.json()["choices"][0]
                answer = choice["message"]["content"].strip()
                probability = (choice.get("label_probabilities") or {}).get(answer)
                right += answer == label
                mark = "[green]✓[/]" if answer == label else "[red]✗[/]"
                table.add_row(
                    label,
                    row["messages"][-2]["content"],
                    f"{mark} {answer}",
                    "-" if probability is None else f"{probability:.2f}",
                )
    console.print(table)
    console.print(
        f"{right}/{len(questions)} intents answered right through the API; server stopped"
    )
    _done(t)


def _finish(
    results: dict[str, Any],
    before: list[Any],
    out: Path,
    run_dir: Path,
    adapter: Path | None,
    seconds: float,
) -> None:
    from tuneforge.cli.eval import results_table

    console.print(Rule("[bold]did fine-tuning help?[/]"))
    console.print(results_table(results))
    console.print(results["verdict"], highlight=False, markup=False)
    console.print(
        "before training: "
        + ", ".join(f"{s.name} {100 * s.accuracy:.1f} %" for s in before)
        + " (same test split)",
        highlight=False,
    )
    artifacts = [
        ("data", out / "data", "train/val/test JSONL, manifest.json, report.md"),
        ("run", run_dir, "adapter, config.yaml, manifest.json, metrics.jsonl, loss.png"),
        ("eval", out / "eval", "report.md, report.html, metrics.json, confusion PNGs"),
    ]
    if adapter is not None:
        artifacts.append(("export", adapter, "PEFT adapter, MODEL_CARD.md, tuneforge.json"))
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    for name, path, what in artifacts:
        table.add_row(f"[bold]{name}[/]", f"{path}/", what)
    console.print(table)
    console.print(
        Markdown(
            f"Next: `tuneforge serve --adapter {ADAPTER_NAME}={run_dir}` to serve it, "
            f"`tuneforge ui --runs {out}` to browse it."
        )
    )
    console.print(f"[bold green]demo finished[/] in {seconds / 60:.1f} min")
