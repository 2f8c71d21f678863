"""Write a tiny llama model (from `tiny.build_tiny_causal_lm`) as a GGUF file, for tests.

Loading a GGUF is the default path (the packaged SmolLM2 is one), but the real file takes ~15 s
to convert. This writes a ~150 KB GGUF laid out the way llama.cpp's converter does it -- llama
tensor names, q/k rows permuted for its rotary layout, a byte-level BPE ("gpt2") tokenizer and a
chat template in the metadata -- so the GGUF -> plain model -> cache path can be tested in well
under a second and compared exactly with the HF model it came from.

Test support only. It lives in export, not beside `models.tiny`, because the writing itself is
tuneforge's GGUF export (`gguf_writer`): the files tests load are the files `tuneforge export
--to gguf` produces, and models (below export) must not import it.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_gguf(path: str | Path, *, quantized: bool = False, seed: int = 0) -> Path:
    """Write a tiny llama GGUF to `path`; float32 tensors, or Q8_0 matrices if `quantized`.

    The HF model it was made from is written beside it, in `<path>.hf/`, for exact comparisons.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.gguf_writer import write_gguf
    from tuneforge.models.tiny import build_tiny_causal_lm

    path = Path(path)
    hf_dir = build_tiny_causal_lm(path.parent / f"{path.name}.hf", "llama", seed=seed)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    write_gguf(model, tokenizer, path, "q8_0" if quantized else "f32", name="tuneforge tiny llama")
    return path
