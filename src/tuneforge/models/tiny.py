"""Tiny, randomly initialised causal LMs written to a directory, for tests that need a real model.

The train/eval/export/serve tests all need *a* model that loads through the same
`from_pretrained` path as the real one but runs in milliseconds on a CPU. `build_tiny_causal_lm`
writes one (weights, config, tokenizer, optional chat template) to a directory in well under a
second, with no download: the tokenizer is a byte-level BPE trained in-process on a few
sentences, so every string round-trips, and the model is built from a config, not fetched.

Architectures:
  llama  -- like SmolLM2: a ChatML chat template (`<|im_start|>`/`<|im_end|>`), tied embeddings.
  gemma  -- like Gemma 3 270M (base): `<bos>`, `<start_of_turn>`/`<end_of_turn>` in the vocabulary
            but *no* chat template, so the fallback in `tuneforge.models.tokenizer` is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Arch = Literal["llama", "gemma"]

# Special tokens per architecture: (bos, eos, unk, extra specials).
_SPECIALS: dict[str, tuple[str, str, str, list[str]]] = {
    "llama": ("<|im_start|>", "<|im_end|>", "<|endoftext|>", []),
    "gemma": ("<bos>", "<eos>", "<unk>", ["<start_of_turn>", "<end_of_turn>"]),
}

# The same ChatML template SmolLM2 ships, minus its default system prompt.
TINY_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A small language model learns to answer questions.",
    "Fine-tuning adapts a pretrained model to a new task with little data.",
    "Positive: I loved this film. Negative: the food was cold and bland.",
    "user assistant system: hello, how are you? I am fine, thank you!",
    "Translate to French: good morning -> bonjour. 0123456789 + - * / = ( ) [ ] { }",
    "def add(a, b):\n    return a + b\n",
]


def build_tiny_tokenizer(arch: Arch = "llama", *, vocab_size: int = 384, pad_token: bool = False):
    """A fast byte-level BPE tokenizer (PreTrainedTokenizerFast) trained on a built-in corpus.

    `pad_token=False` (the default) mirrors base models that ship without one, so callers
    exercise the pad fallback in `tuneforge.models.tokenizer.ensure_pad_token`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, unk, extra = _SPECIALS[arch]
    specials = [unk, bos, eos, *extra] + (["<pad>"] if pad_token else [])
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        # The full byte alphabet keeps every input encodable (no unknown characters).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        pad_token="<pad>" if pad_token else None,
        additional_special_tokens=extra or None,
    )


def _tiny_config(arch: Arch, tokenizer, *, hidden: int, layers: int, heads: int, kv_heads: int):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common, architectures=["LlamaForCausalLM"])
    if arch == "gemma":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(
            **common, sliding_window=64, query_pre_attn_scalar=hidden // heads,
            architectures=["Gemma3ForCausalLM"],
        )  # fmt: skip
    raise ValueError(f"unknown tiny architecture {arch!r}; expected llama or gemma")


def build_tiny_causal_lm(
    directory: str | Path,
    arch: Arch = "llama",
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    chat_template: bool | None = None,
    pad_token: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random causal LM + tokenizer to `directory` (an HF model dir); returns it.

    `chat_template=None` means the architecture's usual: ChatML for llama, none for gemma.
    Deterministic for a given `seed`. Weights are float32 safetensors (~100 KB).
    """
    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(arch, pad_token=pad_token)
    if chat_template is None:
        chat_template = arch == "llama"
    if chat_template:
        tokenizer.chat_template = TINY_CHATML_TEMPLATE
    config = _tiny_config(
        arch, tokenizer, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
