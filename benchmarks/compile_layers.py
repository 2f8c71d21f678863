"""torch.compile of the decoder layers on CPU: one LoRA training step's forward + backward.

    python benchmarks/compile_layers.py [--layers 4] [--tokens 370] [--steps 10]

A decoder stack with SmolLM2-135M's shapes (hidden 576, MLP 1536, 9 query / 3 key-value heads,
random weights: the arithmetic is the same as the real ones'), LoRA r16 on q/k/v/o_proj, one
packed row of `--tokens` tokens (B's row at batch 8 on the Banking77 benchmark is ~370). It
times the forward + backward of the stack eagerly, then with every layer compiled
(`layer.compile(dynamic=True)`, the torchtune way: one graph reused by every layer), in the
same process, and prints one JSON line with both and their ratio, plus the compile time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def build_stack(layers: int, seed: int) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        attn_implementation="sdpa",
    )
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    model = get_peft_model(LlamaForCausalLM(config), lora)
    model.train()
    return model.get_base_model().model  # the decoder stack, without the LM head


def seconds_per_step(stack: torch.nn.Module, tokens: torch.Tensor, steps: int) -> float:
    def step() -> None:
        stack(input_ids=tokens).last_hidden_state.sum().backward()

    for _ in range(3):  # warm-up: allocator, oneDNN kernels
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=370)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    stack = build_stack(args.layers, args.seed)
    tokens = torch.randint(0, 49152, (1, args.tokens))
    eager = seconds_per_step(stack, tokens, args.steps)
    started = time.perf_counter()
    for layer in stack.layers:
        layer.compile(dynamic=True)
    stack(input_ids=tokens).last_hidden_state.sum().backward()  # compiles forward and backward
    compile_seconds = time.perf_counter() - started
    compiled = seconds_per_step(stack, tokens, args.steps)
    print(
        json.dumps(
            {
                "benchmark": "compile_layers",
                "layers": args.layers,
                "tokens": args.tokens,
                "threads": torch.get_num_threads(),
                "eager_s_per_step": round(eager, 4),
                "compiled_s_per_step": round(compiled, 4),
                "compile_seconds": round(compile_seconds, 1),
                "ratio": {"speedup": round(eager / compiled, 3)},
            }
        )
    )


if __name__ == "__main__":
    main()
