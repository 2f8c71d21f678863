"""Training memory, term by term: weights + gradients + optimizer states + activations + runtime.

Precisions (what `tuneforge train` does on each device):
  fp32 (CPU)    weights, adapters, gradients, activations in float32; AdamW (torch), 2 fp32
                states per trainable parameter.
  bf16 (CUDA)   base weights bfloat16; full fine-tuning trains them in bfloat16; peft keeps
                adapter weights in float32; activations bfloat16 (autocast); AdamW 8-bit
                (bitsandbytes, the `auto` optimizer on CUDA): 2 one-byte states per parameter.
  4-bit bases   (QLoRA) linear weights NF4: 0.5 byte per weight plus the block constants --
                one fp32 absmax per 64 weights (0.0625 B/weight), or with double quantization
                one 8-bit absmax per 64 and one fp32 per 256 blocks (1/64 + 4/16384 B/weight).
                The output head, embeddings and norms stay in the precision above.

Activations saved for the backward pass, per token, per decoder layer (elements), Llama-style
layer (RMSNorm, grouped-query attention, SwiGLU MLP):
  2 norms x 3h      each RMSNorm keeps its input, the normalised input and its output
  attention         q, k, v projections (q + 2kv), rotary copies of q and k (q + kv), the
                    attention output and its re-layout for o_proj (2q); + 2q when k/v heads are
                    repeated for grouped-query attention (kv < q)
  MLP 4i            gate and up outputs, SiLU(gate), their product (down_proj's input)
  LoRA              with dropout > 0 each adapted layer keeps its dropped-out input (in_features
                    elements + a 1-byte mask) and its A x (r elements)
where h = hidden size, q = heads x head_dim, kv = kv_heads x head_dim, i = intermediate size.
Attention itself is the fused SDPA kernel: no seq x seq matrix is kept. With gradient
checkpointing only each layer's input (h) is kept, plus one layer's activations recomputed at
a time. Tokens per forward pass: the batch of the longest rows (padded rows or one packed row),
capped at train.max_batch_tokens when the loop splits a batch (it never splits a single row),
with the prompt prefix all rows share (a system prompt) counted once, as the loop computes it
once.

What this counts is live memory. On CPU the process's peak RSS can be higher: glibc raises its
mmap threshold after large frees, so later activation-sized blocks come from the heap, and freed
heap memory is kept. Measured on SmolLM2-135M (docs/benchmarks.md): 2.90 GiB peak RSS with
MALLOC_MMAP_THRESHOLD_=131072 (estimate 2.92), 4.20 GiB with glibc's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tuneforge.estimate.shape import Params, Shape

NF4_BYTES = 0.5
ABSMAX_BYTES = 4 / 64
DOUBLE_QUANT_BYTES = 1 / 64 + 4 / (64 * 256)


@dataclass(frozen=True)
class Precision:
    name: str
    weight_bytes: int
    """Bytes per base weight that is not 4-bit."""
    activation_bytes: int
    adapter_bytes: int
    """Bytes per adapter (LoRA etc.) parameter; full fine-tuning trains weight_bytes weights."""
    optimizer_bytes: float
    """Bytes of optimizer state per trainable parameter (AdamW: 2 states)."""


FP32_CPU = Precision("fp32 (CPU)", 4, 4, 4, 8.0)
BF16_CUDA = Precision("bf16 (CUDA)", 2, 2, 4, 2.0)


@dataclass(frozen=True)
class Breakdown:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    runtime: float
    """Framework memory: the process's RSS before the model loads (CPU), the CUDA context."""

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.runtime

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def weight_bytes(params: Params, precision: Precision, kind: str, double_quant: bool) -> float:
    """The base model's weights, plus (for adapter methods) the adapter's."""
    adapter = 0 if kind == "full" else params.trainable * precision.adapter_bytes
    if kind != "qlora":
        return params.total * precision.weight_bytes + adapter
    per_quantized = NF4_BYTES + (DOUBLE_QUANT_BYTES if double_quant else ABSMAX_BYTES)
    rest = params.total - params.quantizable
    return params.quantizable * per_quantized + rest * precision.weight_bytes + adapter


def trainable_bytes(params: Params, precision: Precision, kind: str) -> float:
    """Gradients: one per trainable parameter, in that parameter's dtype."""
    per = precision.weight_bytes if kind == "full" else precision.adapter_bytes
    return params.trainable * per


def optimizer_bytes(params: Params, precision: Precision) -> float:
    return params.trainable * precision.optimizer_bytes


def layer_elements_per_token(shape: Shape) -> int:
    """Saved activation elements per token in one decoder layer (module docstring)."""
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    attention = (q + 2 * kv) + (q + kv) + 2 * q + (2 * q if kv < q else 0)
    return 2 * 3 * h + attention + 4 * i


def activation_bytes(
    shape: Shape,
    params: Params,
    precision: Precision,
    tokens: int,
    *,
    dropout: float,
    checkpointing: bool,
) -> float:
    """Saved activations for one forward pass of `tokens` (padded) tokens."""
    act = precision.activation_bytes
    layer = layer_elements_per_token(shape) * act
    adapters = params.adapter_rank * act
    if dropout > 0:
        adapters += params.adapter_in_features * (act + 1)
    adapters_per_layer = adapters / shape.layers
    if checkpointing:
        per_token = shape.layers * shape.hidden * act + layer + adapters_per_layer
    else:
        per_token = shape.layers * layer + adapters
    return per_token * tokens


def tokens_per_pass(
    batch_size: int,
    longest: int,
    max_batch_tokens: int | None,
    prefix: int = 0,
    packed: bool = False,
    multiple: int = 1,
) -> int:
    """Tokens in the largest forward pass without a dataset: a batch of rows all as long as the
    longest, cut to the token budget by the loop's own `token_budget_chunks` (a row longer than
    the budget runs alone), the shared prompt prefix (`prefix` tokens) computed once, lengths
    rounded up to `multiple` (`data.pad_to_multiple_of`) as the loop's batches are."""
    from tuneforge.train.data import Batching, token_budget_chunks

    batching = Batching(pad_id=0, prefix_len=prefix, packed=packed, multiple=multiple)
    lengths = [longest] * batch_size
    first = token_budget_chunks(list(range(batch_size)), lengths, max_batch_tokens, batching.tokens)
    return batching.computed_tokens([longest] * len(first[0]))


def breakdown(
    shape: Shape,
    params: Params,
    precision: Precision,
    kind: str,
    tokens: int,
    *,
    dropout: float,
    double_quant: bool,
    checkpointing: bool,
    runtime: float,
) -> Breakdown:
    return Breakdown(
        weights=weight_bytes(params, precision, kind, double_quant),
        gradients=trainable_bytes(params, precision, kind),
        optimizer=optimizer_bytes(params, precision),
        activations=activation_bytes(
            shape, params, precision, tokens, dropout=dropout, checkpointing=checkpointing
        ),
        runtime=runtime,
    )
