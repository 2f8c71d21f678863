"""benchmarks/compile_layers.py: the stack it times is SmolLM2-shaped and trains only LoRA."""

from __future__ import annotations

import torch
from benchmark_module import load_benchmark


def test_stack_has_smollm2_shapes_and_only_lora_learns():
    compile_layers = load_benchmark("compile_layers")
    stack = compile_layers.build_stack(layers=1, seed=0)
    attention = stack.layers[0].self_attn
    assert attention.q_proj.base_layer.weight.shape == (576, 576)
    assert attention.k_proj.base_layer.weight.shape == (192, 576)  # 3 key-value heads of 64
    assert compile_layers.seconds_per_step(stack, torch.randint(0, 100, (1, 8)), steps=1) > 0
    learned = {n for n, p in stack.named_parameters() if p.grad is not None}
    assert learned and all("lora_" in n for n in learned)
