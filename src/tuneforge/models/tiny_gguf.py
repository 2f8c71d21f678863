"""Write a tiny llama model (from `tiny.build_tiny_causal_lm`) as a GGUF file, for tests.

Loading a GGUF is the default path (the packaged SmolLM2 is one), but the real file takes ~15 s
to convert. This writes a ~150 KB GGUF laid out the way llama.cpp's converter does it -- llama
tensor names, q/k rows permuted for its rotary layout, a byte-level BPE ("gpt2") tokenizer and a
chat template in the metadata -- so the GGUF -> plain model -> cache path can be tested in well
under a second and compared exactly with the HF model it came from.

Test support only: tuneforge's real GGUF export lives in `tuneforge.export`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# HF parameter name pattern -> llama.cpp tensor name (per layer `{i}`).
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_CONTROL = 3  # gguf TokenType.CONTROL
_NORMAL = 1


def _permute_for_gguf(weights: Any, n_head: int) -> Any:
    """llama.cpp's q/k row permutation (transformers applies the inverse when loading)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = set(tokenizer.all_special_tokens)
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    return {
        "tokens": tokens,
        "types": [_CONTROL if token in special else _NORMAL for token in tokens],
        "merges": merges,
    }


def write_tiny_gguf(path: str | Path, *, quantized: bool = False, seed: int = 0) -> Path:
    """Write a tiny llama GGUF to `path`; float32 tensors, or Q8_0 matrices if `quantized`.

    The HF model it was made from is written beside it, in `<path>.hf/`, for exact comparisons.
    """
    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.tiny import build_tiny_causal_lm

    path = Path(path)
    hf_dir = build_tiny_causal_lm(path.parent / f"{path.name}.hf", "llama", seed=seed)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    cfg = model.config

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tuneforge tiny llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_Q8_0 if quantized else gguf.LlamaFileType.ALL_F32
    )

    meta = _tokenizer_metadata(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(meta["tokens"])
    writer.add_token_types(meta["types"])
    writer.add_token_merges(meta["merges"])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    state = {name: t.detach().float().numpy() for name, t in model.state_dict().items()}
    tensors = {"token_embd.weight": state["model.embed_tokens.weight"]}
    tensors["output_norm.weight"] = state["model.norm.weight"]
    # Tied embeddings: llama.cpp omits output.weight, which is how transformers detects the tie.
    for i in range(cfg.num_hidden_layers):
        for hf_name, gguf_name in _LAYER_TENSORS.items():
            data = state[f"model.layers.{i}.{hf_name}"]
            if gguf_name == "attn_q.weight":
                data = _permute_for_gguf(data, cfg.num_attention_heads)
            elif gguf_name == "attn_k.weight":
                data = _permute_for_gguf(data, cfg.num_key_value_heads)
            tensors[f"blk.{i}.{gguf_name}"] = data
    for name, data in tensors.items():
        data = np.ascontiguousarray(data, dtype=np.float32)
        if quantized and data.ndim == 2:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(
                name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
            )
        else:
            writer.add_tensor(name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
