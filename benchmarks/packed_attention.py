"""Attention over one packed row: chunked (`data.packed_attention=chunks`) against one SDPA call
under the row's block mask (`mask`), forward + backward, in one process.

    python benchmarks/packed_attention.py [--examples 8,16,32,64] [--dtype float32|bfloat16]

Shapes are SmolLM2-135M's attention (9 query heads, 3 key/value heads, head dim 64); a row
packs N examples of 10-39 own tokens (seeded) after a 19-token shared prefix, as Banking77's
chat rows do. Prints one JSON line: milliseconds per layer call for each N and each way, and
mask / chunks (above 1: chunks is faster). Every row is chunked here, also those shorter than
the `MIN_ROW_TOKENS` below which training keeps the mask.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tuneforge.data.format import IGNORE_INDEX
from tuneforge.models.packed_attention import CHUNK_TOKENS, ChunkPlan, packed_attention_forward
from tuneforge.train.data import TokenizedSplit, collate_packed

HEADS, KV_HEADS, HEAD_DIM, PREFIX = 9, 3, 64, 19


class _Attention(torch.nn.Module):
    num_key_value_groups = HEADS // KV_HEADS  # read by transformers' SDPA function


def packed_row(examples: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    own = torch.randint(10, 40, (examples,), generator=generator).tolist()
    ids = [list(range(PREFIX)) + [100 + k] * n for k, n in enumerate(own)]
    split = TokenizedSplit(input_ids=ids, labels=[[IGNORE_INDEX] * len(i) for i in ids])
    return collate_packed(split, list(range(examples)), PREFIX)


def ms_per_call(fn, length: int, dtype: torch.dtype, repeats: int) -> float:
    shapes = [(1, HEADS, length, HEAD_DIM), *[(1, KV_HEADS, length, HEAD_DIM)] * 2]
    q, k, v = (torch.randn(s, dtype=dtype, requires_grad=True) for s in shapes)
    for _ in range(3):  # warm-up
        fn(q, k, v).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(q, k, v).sum().backward()
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", default="8,16,32,64", help="examples per packed row")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    module, scale = _Attention(), HEAD_DIM**-0.5
    rows = []
    for examples in (int(n) for n in args.examples.split(",")):
        batch = packed_row(examples, args.seed)
        length = batch["input_ids"].shape[1]
        allowed = batch["attention_mask"]
        additive = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )  # as answer_loss builds it for the mask path
        # min_row_tokens=0: chunk every row, to see where chunking starts to pay
        plan = ChunkPlan.from_row(batch["segment_ids"][0], allowed[0, 0], min_row_tokens=0)

        def masked(q, k, v, additive=additive):
            return sdpa_attention_forward(module, q, k, v, additive, scaling=scale)[0]

        def chunked(q, k, v, plan=plan):
            return packed_attention_forward(
                module, q, k, v, None, scaling=scale, packed_chunks=plan
            )[0]

        mask_ms = ms_per_call(masked, length, dtype, args.repeats)
        chunks_ms = ms_per_call(chunked, length, dtype, args.repeats)
        rows.append(
            {
                "examples": examples,
                "row_tokens": length,
                "chunks": len(plan),
                "mask_ms": round(mask_ms, 2),
                "chunks_ms": round(chunks_ms, 2),
                "mask_over_chunks": round(mask_ms / chunks_ms, 2),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "packed_attention",
                "dtype": args.dtype,
                "chunk_tokens": CHUNK_TOKENS,
                "threads": torch.get_num_threads(),
                "shapes": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM},
                "prefix": PREFIX,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
