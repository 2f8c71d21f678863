"""Loading a `tuneforge train` run back: adapter and full runs, and broken run directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from keyword_task import train_tiny_run
from tuneforge.errors import TuneforgeError
from tuneforge.models.trained import (
    base_model_view,
    inspect_run,
    is_adapter_model,
    load_base,
    load_trained,
)

LABELS = ["fruit", "vegetable", "fish"]
KEYWORDS = {"apple": "fruit", "carrot": "vegetable", "salmon": "fish"}


def _rows(n: int) -> list[dict]:
    keywords = list(KEYWORDS)
    out = []
    for i in range(n):
        word = keywords[i % 3]
        text = f"What is {word}? item {i}"
        out.append(
            {
                "messages": [
                    {"role": "system", "content": "Classify the item."},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": KEYWORDS[word]},
                ],
                "label": KEYWORDS[word],
                "text": text,
            }
        )
    return out


def _train(root: Path, model_dir: Path, kind: str) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(12)))
    (data / "labels.json").write_text(json.dumps(LABELS))
    return train_tiny_run(
        root / f"run-{kind}",
        model_dir,
        data,
        f"method.kind={kind}",
        "train.max_steps=3",
        "train.batch_size=4",
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_CACHE", str(root / "cache"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return {kind: _train(root, tiny_llama_dir, kind) for kind in ("lora", "full")}
        finally:
            torch.set_num_threads(threads)


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("What is apple?", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1]


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_round_trip_matches_the_trained_weights(runs, kind, tiny_llama_dir):
    from safetensors.torch import load_file

    model, tokenizer, cfg = load_trained(runs[kind])
    assert cfg.method.kind == kind
    assert not model.training
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    # The turn end stops generation, as load_model sets up.
    eos = model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in (
        eos if isinstance(eos, list) else [eos]
    )
    weights = "adapter_model.safetensors" if kind == "lora" else "model.safetensors"
    saved = load_file(runs[kind] / weights)
    # peft saves adapter tensors without the adapter name: ...lora_A.weight is lora_A.default.weight
    params = {name.replace(".default.", "."): p.detach() for name, p in model.named_parameters()}
    for name, tensor in saved.items():
        torch.testing.assert_close(params[name], tensor)
    assert saved
    assert is_adapter_model(model) == (kind == "lora")


def test_adapter_view_of_the_base_equals_the_base_loaded_alone(runs):
    model, tokenizer, _ = load_trained(runs["lora"])
    base, base_tokenizer = load_base(runs["lora"])
    tuned_logits = _logits(model, tokenizer)
    with base_model_view(model) as view:
        viewed = _logits(view, tokenizer)
    torch.testing.assert_close(viewed, _logits(base, base_tokenizer))
    assert not torch.allclose(viewed, tuned_logits)  # lr 1e-2 for 3 steps moved the adapter
    torch.testing.assert_close(_logits(model, tokenizer), tuned_logits)  # re-enabled after


def test_full_run_differs_from_its_base(runs):
    model, tokenizer, _ = load_trained(runs["full"])
    base, _ = load_base(runs["full"])
    assert not torch.allclose(_logits(model, tokenizer), _logits(base, tokenizer))
    with pytest.raises(TuneforgeError, match="load_base"), base_model_view(model):
        pass


def test_run_without_its_template_file_still_loads(runs, tmp_path):
    """The template is saved with the run's tokenizer; the file named in the config may be gone."""
    run = tmp_path / "run"
    shutil.copytree(runs["lora"], run)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(
        text.replace("chat_template: null", f"chat_template: {tmp_path / 'gone.jinja'}")
    )
    _, tokenizer, _ = load_trained(run)
    assert "<|im_start|>" in tokenizer.chat_template


def test_inspect_reports_task_and_labels(runs):
    info = inspect_run(runs["lora"])
    assert info.weights == "adapter" and info.task == "classification" and info.labels == LABELS
    assert inspect_run(runs["full"]).weights == "full"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing", "no such directory"),
        ("config", "config.yaml is missing"),
        ("tokenizer", "tokenizer_config.json"),
        ("adapter_weights", "adapter_model.safetensors missing"),
        ("all_weights", "no trained weights"),
        ("labels", "labels.json: not valid JSON"),
        ("corrupt_adapter", "cannot load the adapter"),
    ],
)
def test_broken_run_dirs_name_what_is_missing(runs, tmp_path, breakage, message):
    run = tmp_path / "run"
    if breakage != "missing":
        shutil.copytree(runs["lora"], run)
    if breakage == "config":
        (run / "config.yaml").unlink()
    elif breakage == "tokenizer":
        (run / "tokenizer_config.json").unlink()
    elif breakage == "adapter_weights":
        (run / "adapter_model.safetensors").unlink()
    elif breakage == "all_weights":
        (run / "adapter_model.safetensors").unlink()
        (run / "adapter_config.json").unlink()
    elif breakage == "labels":
        (run / "data" / "labels.json").write_text("[not json")
    elif breakage == "corrupt_adapter":
        (run / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(TuneforgeError, match=message):
        load_trained(run)


def test_merged_adapter_predicts_the_same_and_unfolds(tmp_path):
    """Folding LoRA into the weights changes only the speed, and exiting restores the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.models.tiny import build_tiny_causal_lm
    from tuneforge.models.trained import merged_adapter

    base = AutoModelForCausalLM.from_pretrained(build_tiny_causal_lm(tmp_path / "m"))
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    model.eval()
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        with merged_adapter(model) as folded:
            assert any(getattr(m, "merged", False) for m in folded.modules())
            torch.testing.assert_close(folded(input_ids=ids).logits, tuned, atol=1e-5, rtol=1e-4)
        assert not any(getattr(m, "merged", False) for m in model.modules())
        torch.testing.assert_close(model(input_ids=ids).logits, tuned, atol=1e-5, rtol=1e-4)
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, plain, atol=1e-5, rtol=1e-4)
    assert not (tuned - plain).abs().max() < 1e-3  # the adapter matters


def test_a_path_the_system_cannot_even_look_up_is_a_tuneforge_error():
    with pytest.raises(TuneforgeError, match=r"cannot be read .*File name too long"):
        inspect_run("/" + "a" * 5000)
