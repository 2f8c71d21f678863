"""Builders for the serve tests: tiny adapter runs, a real uvicorn server in a thread."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from tuneforge.serve import server as server_module


def make_adapter_run(
    root: Path,
    base_dir: Path,
    name: str,
    seed: int,
    *,
    kind: str = "lora",
    labels: list[str] | None = None,
    scale: float = 0.5,
) -> Path:
    """A run directory as `tuneforge train` writes it, with distinct random adapter weights.

    The adapter is attached by tuneforge's own `attach_method` and saved like a finished run
    (adapter, tokenizer + template, config.yaml, manifest.json, data/labels.json); its LoRA
    weights are random with `seed` so that each adapter visibly changes the model's output.
    """
    import torch

    from tuneforge.config import TrainConfig, resolve, to_yaml
    from tuneforge.models.adapters import attach_method
    from tuneforge.models.load import load_model
    from tuneforge.models.tokenizer import save_tokenizer

    cfg = resolve(
        TrainConfig,
        None,
        [
            f"model.name={base_dir}",
            f"method.kind={kind}",
            "method.r=4",
            "tracking.tensorboard=false",
        ],
    )
    model, tokenizer, info = load_model(cfg.model)
    model = attach_method(model, cfg.method)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_A" in param_name or "lora_B" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif "lora_magnitude_vector" in param_name:  # DoRA: rescale the columns too
                param.mul_(torch.rand(param.shape, generator=generator) * 4)
    run = root / name
    run.mkdir(parents=True)
    model.save_pretrained(run)
    save_tokenizer(tokenizer, run)
    (run / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps({"model": info.to_dict()}), encoding="utf-8")
    if labels is not None:
        (run / "data").mkdir()
        (run / "data" / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    return run


def free_socket() -> socket.socket:
    return server_module.free_socket()


running_server = server_module.background_server


class Reference:
    """Greedy outputs of each model run alone, the plain way: `load_trained` + `generate`.

    The server must give every request exactly what its adapter gives on its own, whatever
    else shares its batch.
    """

    def __init__(self, base_dir: Path, runs: dict[str, Path], base_name: str = "tiny") -> None:
        self.base_dir = base_dir
        self.runs = runs
        self.base_name = base_name
        self._models: dict[str, Any] = {}

    def model(self, name: str) -> tuple[Any, Any]:
        if name not in self._models:
            if name == self.base_name:
                from tuneforge.config import ModelConfig
                from tuneforge.models.load import load_model

                model, tokenizer, _ = load_model(ModelConfig(name=str(self.base_dir)))
            else:
                from tuneforge.models.trained import load_trained

                model, tokenizer, _ = load_trained(self.runs[name])
            self._models[name] = (model, tokenizer)
        return self._models[name]

    def chat(self, name: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        from tuneforge.serve.prompts import chat_prompt_ids

        _, tokenizer = self.model(name)
        return self.continue_ids(name, chat_prompt_ids(tokenizer, messages), max_tokens)

    def completion(self, name: str, prompt: str, max_tokens: int) -> str:
        _, tokenizer = self.model(name)
        return self.continue_ids(name, list(tokenizer(prompt)["input_ids"]), max_tokens)

    def continue_ids(self, name: str, ids: list[int], max_tokens: int) -> str:
        import torch

        from tuneforge.models.tokenizer import stop_token_ids

        model, tokenizer = self.model(name)
        with torch.no_grad():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                max_new_tokens=max_tokens,
                do_sample=False,
            )
        new = out[0, len(ids) :].tolist()
        stops = set(stop_token_ids(tokenizer))
        cut = next((i for i, token in enumerate(new) if token in stops), len(new))
        return tokenizer.decode(new[:cut], skip_special_tokens=True)
