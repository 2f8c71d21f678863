"""Write a transformers causal LM + its tokenizer as a GGUF file, with the `gguf` package.

What llama.cpp's own converter does, for the architectures tuneforge ships:
  llama   (SmolLM2)  q/k rows permuted into llama.cpp's rotary layout;
  gemma3  (Gemma 3)  every RMSNorm weight stored as 1 + w (Gemma's norm multiplies by 1 + w;
                     llama.cpp's multiplies by w).
Tensor names come from gguf's own HF -> GGUF name map (`gguf.get_tensor_name_map`), the same
table transformers' GGUF loader inverts, so what we write is what it (and llama.cpp) reads.

Quantization: norms and other 1-D tensors stay float32 (llama.cpp's converter does the same).
For the 4/5-bit types the embedding (and the output matrix, if untied) stays q8_0, as
llama-quantize keeps the output layer at higher precision: it is the most sensitive tensor.

The tokenizer: if the base model came from a GGUF whose vocabulary is the run's, its tokenizer
metadata (model, pre-tokenizer, tokens, types, merges, scores) is copied, so llama.cpp keeps
tokenizing the way the original file did; otherwise a byte-level BPE tokenizer is written from
the HF tokenizer. The chat template and the special token ids are always the run's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.errors import TuneforgeError

if TYPE_CHECKING:
    import numpy as np

# `--quant` name -> (GGMLQuantizationType name for 2-D weights, LlamaFileType name).
QUANT_TYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q5_1": ("Q5_1", "MOSTLY_Q5_1"),
    "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
LOSSLESS_QUANTS = ("f32", "f16", "bf16", "q8_0")
"""Types whose round trip must agree >= 99 % by default (the rest: 90 %)."""
_KEEP_Q8 = {"q5_1", "q5_0", "q4_1", "q4_0"}

# transformers model_type -> gguf architecture name.
ARCHITECTURES = {"llama": "llama", "gemma3_text": "gemma3"}

# gguf TokenType values.
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5
_TOKENIZER_KEYS = ("model", "pre", "tokens", "token_type", "merges", "scores", "add_space_prefix")


@dataclass(frozen=True)
class GGUFResult:
    path: Path
    architecture: str
    quant: str
    tensor_types: dict[str, int]
    """Count of tensors per GGML type, e.g. {"Q8_0": 210, "F32": 61}."""
    tokenizer_from: str
    """"source gguf" (copied from the base GGUF) or "hf tokenizer"."""


def check_quant(quant: str) -> str:
    quant = quant.lower()
    if quant not in QUANT_TYPES:
        raise TuneforgeError(
            f"--quant {quant!r}: the gguf package can write {', '.join(QUANT_TYPES)}; for "
            "k-quants (q4_k_m, ...) export f16 and run llama.cpp's llama-quantize on it"
        )
    return quant


def gguf_architecture(config: Any) -> str:
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in ARCHITECTURES:
        raise TuneforgeError(
            f"GGUF export: architecture {model_type!r} is not supported; tuneforge maps the "
            f"tensors of {', '.join(ARCHITECTURES)} (SmolLM2, Gemma 3); export --to merged and "
            "convert with llama.cpp's convert_hf_to_gguf.py"
        )
    return ARCHITECTURES[model_type]


def _permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (transformers applies the inverse when loading)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope_thetas(config: Any) -> tuple[float, float | None]:
    """(global rope base, sliding-window rope base or None); only plain rotary is supported."""
    params = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in params:  # per-layer-type parameters (Gemma 3)
        full, local = params["full_attention"], params.get("sliding_attention") or {}
    else:
        full, local = params, {}
    kinds = {p.get("rope_type", "default") for p in (full, local) if p}
    if kinds - {"default"}:
        raise TuneforgeError(
            f"GGUF export: rope scaling {sorted(kinds)} is not supported; export --to merged"
        )
    theta = full.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise TuneforgeError("GGUF export: the model config has no rope_theta")
    return float(theta), (float(local["rope_theta"]) if "rope_theta" in local else None)


def _add_hparams(writer: Any, arch: str, config: Any) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    theta, local_theta = _rope_thetas(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(theta)
    writer.add_vocab_size(config.vocab_size)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // config.num_attention_heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
    else:  # gemma3
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        if getattr(config, "sliding_window", None):
            writer.add_sliding_window(config.sliding_window)
        if local_theta is not None:
            writer.add_rope_freq_base_swa(local_theta)


def _tensors(model: Any, arch: str) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array, transformed as llama.cpp's converter would."""
    import gguf
    import numpy as np

    config = model.config
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    embed = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight.data_ptr() == embed.data_ptr()
    out: dict[str, np.ndarray] = {}
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name.endswith("lm_head.weight"):
            continue  # llama.cpp omits output.weight for tied embeddings; loaders re-tie
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TuneforgeError(
                f"GGUF export: no GGUF name for tensor {hf_name!r} of this {arch} model "
                "(an adapter's modules_to_save, or an unusual variant); export --to merged"
            )
        data = tensor.detach().to("cpu").float().numpy()
        if arch == "llama" and gguf_name.endswith("attn_q.weight"):
            data = _permute_qk(data, config.num_attention_heads)
        elif arch == "llama" and gguf_name.endswith("attn_k.weight"):
            data = _permute_qk(data, config.num_key_value_heads)
        elif arch == "gemma3" and gguf_name.endswith("norm.weight"):
            data = data + 1.0
        out[gguf_name] = np.ascontiguousarray(data, dtype=np.float32)
    return out


def _tensor_type(name: str, data: np.ndarray, quant: str) -> str:
    """The GGML type to store one tensor in."""
    import gguf

    if data.ndim < 2 or quant == "f32":
        return "F32"
    qtype = QUANT_TYPES[quant][0]
    if quant in _KEEP_Q8 and name in ("token_embd.weight", "output.weight"):
        qtype = "Q8_0"
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
    if data.shape[-1] % block:
        return "F16"  # a row that does not split into blocks: llama.cpp falls back the same way
    return qtype


# ---------------------------------------------------------------------------------------------
# tokenizer metadata
# ---------------------------------------------------------------------------------------------


def _vocab_tokens(tokenizer: Any) -> list[str]:
    vocab = tokenizer.get_vocab()
    tokens: list[str | None] = [None] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    if any(token is None for token in tokens):
        raise TuneforgeError("GGUF export: the tokenizer's vocabulary has gaps in its ids")
    return [str(token) for token in tokens]


def read_source_tokenizer(gguf_path: Path) -> dict[str, Any]:
    """tokenizer.ggml.* metadata (the keys we copy) of an existing GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    fields: dict[str, Any] = {}
    for key in _TOKENIZER_KEYS:
        field = reader.fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            fields[key] = field.contents()
    return fields


def _hf_tokenizer_fields(tokenizer: Any) -> dict[str, Any]:
    """Byte-level BPE ("gpt2") metadata from an HF fast tokenizer."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend.get("model") or {}
    byte_level = "ByteLevel" in json.dumps(backend.get("pre_tokenizer")) or "ByteLevel" in str(
        (backend.get("decoder") or {}).get("type")
    )
    if model.get("type") != "BPE" or not byte_level:
        raise TuneforgeError(
            "GGUF export: only byte-level BPE tokenizers (SmolLM2, GPT-2 style) can be written "
            "from an HF tokenizer; train on the model's GGUF (e.g. model.name=gemma3-270m) so "
            "its tokenizer metadata can be copied, or export --to merged"
        )
    tokens = _vocab_tokens(tokenizer)
    added = {token.content: token.special for token in tokenizer.added_tokens_decoder.values()}
    types = [(_CONTROL if added[t] else _USER_DEFINED) if t in added else _NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"model": "gpt2", "pre": "default", "tokens": tokens, "token_type": types,
            "merges": merges}  # fmt: skip


def tokenizer_fields(tokenizer: Any, source_gguf: Path | None) -> tuple[dict[str, Any], str]:
    """(metadata, where it came from): the source GGUF's if its vocabulary is the run's."""
    if source_gguf is not None and source_gguf.is_file():
        fields = read_source_tokenizer(source_gguf)
        if fields.get("tokens") == _vocab_tokens(tokenizer):
            return fields, "source gguf"
    return _hf_tokenizer_fields(tokenizer), "hf tokenizer"


def _add_tokenizer(writer: Any, tokenizer: Any, fields: dict[str, Any], n_vocab: int) -> None:
    from tuneforge.models.tokenizer import stop_token_ids

    tokens, types = list(fields["tokens"]), list(fields["token_type"])
    scores = list(fields["scores"]) if "scores" in fields else None
    if len(tokens) > n_vocab:
        raise TuneforgeError(
            f"GGUF export: the tokenizer has {len(tokens)} tokens but the model only "
            f"{n_vocab} embedding rows"
        )
    for i in range(len(tokens), n_vocab):  # padded embedding rows, as llama.cpp's converter
        tokens.append(f"[PAD{i}]")
        types.append(_UNUSED)
        if scores is not None:
            scores.append(-1000.0)
    writer.add_tokenizer_model(fields["model"])
    if "pre" in fields:
        writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores)
    if fields.get("merges"):
        writer.add_token_merges(list(fields["merges"]))
    if "add_space_prefix" in fields:
        writer.add_add_space_prefix(bool(fields["add_space_prefix"]))
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(int(token_id))
    stops = stop_token_ids(tokenizer)
    if len(stops) > 1:  # the template's turn end differs from eos (e.g. <end_of_turn>)
        writer.add_eot_token_id(int(stops[1]))
    # Training encodes the rendered template with add_special_tokens=False: the template writes
    # every special token itself, so the runtime must not add a BOS (a doubled BOS changes logits).
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(str(tokenizer.chat_template))


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def write_gguf(
    model: Any,
    tokenizer: Any,
    path: str | Path,
    quant: str = "f16",
    *,
    name: str = "tuneforge export",
    source_gguf: Path | None = None,
    license: str | None = None,
) -> GGUFResult:
    """Write `model` (a plain float model) and `tokenizer` to `path` as a `quant` GGUF."""
    import gguf
    import numpy as np

    quant = check_quant(quant)
    path = Path(path)
    config = model.config
    arch = gguf_architecture(config)
    tensors = _tensors(model, arch)
    fields, tokenizer_from = tokenizer_fields(tokenizer, source_gguf)

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    if license:
        writer.add_license(license)
    _add_hparams(writer, arch, config)
    writer.add_file_type(gguf.LlamaFileType[QUANT_TYPES[quant][1]])
    if quant not in ("f32", "f16", "bf16"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, fields, config.vocab_size)

    counts: dict[str, int] = {}
    for tensor_name, data in tensors.items():
        qname = _tensor_type(tensor_name, data, quant)
        counts[qname] = counts.get(qname, 0) + 1
        qtype = gguf.GGMLQuantizationType[qname]
        if qname == "F32":
            writer.add_tensor(tensor_name, data)
        elif qname == "F16":
            writer.add_tensor(tensor_name, data.astype(np.float16))
        else:
            packed = gguf.quants.quantize(data, qtype)
            writer.add_tensor(tensor_name, packed, raw_shape=packed.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFResult(path, arch, quant, counts, tokenizer_from)


# ---------------------------------------------------------------------------------------------
# read-back check of the architecture
# ---------------------------------------------------------------------------------------------

# Config fields that change what the model computes. GGUF stores some of them; for the rest the
# reader (transformers, llama.cpp) assumes the architecture's defaults, so they must match too.
_ARCH_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "rope_parameters",
    "sliding_window", "layer_types", "query_pre_attn_scalar", "attn_logit_softcapping",
    "final_logit_softcapping", "hidden_act", "hidden_activation", "attention_bias", "mlp_bias",
    "rms_norm_eps",
)  # fmt: skip


def _close(a: Any, b: Any) -> bool:
    """Equal, with float32 rounding allowed (GGUF stores floats as float32)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-6 * max(abs(float(a)), abs(float(b)), 1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def check_readback_config(config: Any, path: Path) -> None:
    """Raise if the config transformers reads from `path` differs from `config` where it matters.

    Catches what the file format cannot say (e.g. a Gemma 3 whose query_pre_attn_scalar is not
    the default every GGUF reader assumes) before the slower logits comparison does.
    """
    from transformers import AutoConfig

    back = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name).to_dict()
    ours = config.to_dict()
    diffs = [
        f"{key}: {ours[key]!r} in the model, {back.get(key)!r} read back"
        for key in _ARCH_KEYS
        if key in ours and not _close(ours[key], back.get(key))
    ]
    if diffs:
        raise TuneforgeError(
            f"GGUF export: {path.name} cannot represent this model's configuration "
            f"({'; '.join(diffs)}); export --to merged instead"
        )
