"""Typed configuration: defaults < YAML file < `a.b=value` overrides, resolved in one place.

Every section is a pydantic model that forbids unknown keys, so a typo fails with the key's
dotted path and the closest valid names instead of being silently ignored.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tuneforge.errors import ConfigError


class StrictModel(BaseModel):
    """What configs and serve's requests both take from users: no unknown keys, no infinite or
    NaN numbers (an infinite lr passes `gt=0` and fails only mid-run; NaN slips past ge/le with
    a misleading message) and no booleans for numbers (lax mode reads true as 1, so
    train.batch_size=true trained at batch 1 and "max_tokens": true made one token)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None:
            args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
            if all(a in (int, float) for a in args or [field.annotation]):
                raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


class Section(StrictModel):
    model_config = ConfigDict(validate_assignment=True)  # merged with StrictModel's


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------

RecordFormat = Literal["auto", "chat", "alpaca", "prompt_completion", "text_label"]


class PrepareConfig(Section):
    """Options of `tuneforge prepare`; each field is also a CLI flag."""

    inputs: list[str] = Field(min_length=1)
    output_dir: str
    format: RecordFormat = "auto"
    task: Literal["auto", "classification", "generation"] = "auto"
    text_col: str | None = None
    label_col: str | None = None
    prompt_col: str | None = None
    response_col: str | None = None
    system: str | None = None
    template: str = "{text}"
    labels: list[str] | None = None
    tokenizer: str = "smollm2-135m"
    max_tokens: int = Field(2048, gt=0)
    max_line_bytes: int = Field(1_000_000, gt=0)
    on_error: Literal["fail", "skip"] = "fail"
    near_dedup: Literal["report", "drop"] = "report"
    near_dup_threshold: float = Field(0.8, gt=0.0, le=1.0)
    conflicts: Literal["drop", "majority", "keep"] = "drop"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seed range
    test_file: str | None = None
    force: bool = False

    @field_validator("template")
    @classmethod
    def _template_has_slot(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("must contain the placeholder {text}, where the example's input goes")
        return value

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(part < 0 for part in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(
                "must be three fractions train,val,test that sum to 1 (e.g. 0.8,0.1,0.1)"
            )
        if value[0] <= 0:
            raise ValueError("the train fraction (the first) must be above 0 (e.g. 0.8,0.1,0.1)")
        return value


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

MethodKind = Literal["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning"]


class ModelConfig(Section):
    name: str = "smollm2-135m"
    """A packaged name (smollm2-135m, gemma3-270m), an HF directory, a hub id or a .gguf path."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: float32 on CPU, bfloat16 on CUDA."""
    chat_template: str | None = None
    """A Jinja template file, or None for the model's own (a documented fallback if it has none)."""
    max_seq_len: int = Field(512, gt=0)
    gradient_checkpointing: bool = False


class DataConfig(Section):
    dir: str | None = None
    """A `tuneforge prepare` output directory (train.jsonl, val.jsonl, ...)."""
    group_by_length: bool = False
    """Batch examples of similar length: less padding (1.3x faster on Gemma 3 270M), but less
    random batches -- on 770 Banking77 rows it raised Gemma's held-out loss from 1.50 to 1.70
    (window 8) and 1.75 (window 64); see docs/benchmarks.md. Off unless speed matters more."""
    group_window: int = Field(8, gt=0)
    """Batches per length-sorting window when grouping (wider: less padding, less random)."""

    packing: bool = True
    """Pack each micro-batch into one row under a block mask (every example computed exactly as
    alone, no padding computed): on SmolLM2 LoRA 1.42x the examples/s of padded rows at 0.71x
    the peak RSS (docs/benchmarks.md). Not used for prompt/prefix tuning, nor for examples
    longer than a sliding attention window; false: padded rows."""
    packed_attention: Literal["chunks", "mask"] = "chunks"
    """How a packed row's attention runs. `chunks`: a row of 640 tokens or more is attended
    ~256 tokens of examples at a time (each chunk sees the shared prefix and itself, which is
    all its examples may see), so the cost grows with the row's length, not its square (SmolLM2
    LoRA, rows of ~1,500 tokens: 1.38x the examples/s); `mask`: one attention over the whole
    row under its block mask. Same result; shorter rows run as `mask` (docs/benchmarks.md).
    Models with attention logit soft-capping or an attention other than SDPA use the mask."""
    pad_to_multiple_of: int | None = Field(None, gt=0)
    """Round every micro-batch's length up to a multiple of this (masked pad tokens), so
    batches come in a few shapes instead of a new one each step. Costs the padding's compute;
    pays where kernels are built per shape (oneDNN's bfloat16 products: train.precision=bf16 on
    CPU) -- see docs/benchmarks.md."""


class MethodConfig(Section):
    kind: MethodKind = "lora"
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"
    rslora: bool = False
    modules_to_save: list[str] | None = None
    num_virtual_tokens: int = Field(20, gt=0)
    prompt_init_text: str | None = None
    quantization: Literal["none", "nf4", "fp4"] = "none"
    double_quant: bool = True

    @model_validator(mode="after")
    def _coherent(self) -> MethodConfig:
        if self.kind == "qlora" and self.quantization == "none":
            # qlora means a 4-bit base; nf4 is its standard type.
            object.__setattr__(self, "quantization", "nf4")
        if self.kind == "full" and self.quantization != "none":
            raise ValueError(
                "full fine-tuning cannot train a 4-bit quantized base; "
                "use method.kind=qlora, or set method.quantization=none"
            )
        return self


class TrainLoopConfig(Section):
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = Field(1.0, gt=0)
    optimizer: Literal["auto", "adamw", "adamw_8bit", "paged_adamw_8bit"] = "auto"
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's seed range
    eval_every: int | None = Field(None, gt=0)
    save_every: int | None = Field(None, gt=0)
    keep_last: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(None, gt=0)
    share_prefix: bool = True
    """Compute the prompt prefix all examples share (system prompt) once per batch."""
    max_batch_tokens: int | None = Field(2048, gt=0)
    """Padded tokens (rows x longest row) one forward pass may hold; a longer batch runs as
    several passes whose gradients add up to the same update. Bounds activation memory on the
    batch of longest examples; null: never split."""
    return_freed_memory: bool = False
    """Linux/glibc: allocate blocks of 128 KiB+ with mmap so freed activations leave the
    process. SmolLM2 LoRA on CPU: peak RSS 0.76x, but examples/s 0.64x (page faults), so
    off unless memory is what limits the run (docs/benchmarks.md)."""
    precision: Literal["auto", "bf16"] = "auto"
    """auto: as the model is loaded (float32 on CPU; bfloat16 with autocast on CUDA). bf16: the
    frozen linear weights are stored in bfloat16 and the step runs under bfloat16 autocast, the
    trained parameters, embeddings and norms staying float32. On a CPU with native bfloat16
    products (SmolLM2 LoRA, docs/benchmarks.md) steps ran 1.5-1.6x faster in one process, whole
    runs 0.9-1.4x; with data.pad_to_multiple_of=64 (oneDNN builds kernels per shape) it peaked
    at 0.8x float32's memory instead of 1.3x. Not the default: the gain is within this host's
    drift. Adapter methods only (full fine-tuning has no frozen weights; qlora's are 4-bit)."""
    grad_norm_limit: float = Field(1e4, gt=0)
    """A gradient norm above this (or a NaN/inf loss) stops the run at the last good checkpoint."""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """Scale train.lr with the global batch (batch_size x grad_accum x processes) relative to
    train.lr_reference_batch: linear (lr x ratio) or sqrt (lr x sqrt(ratio)). none: lr as given,
    whatever the number of processes."""
    lr_reference_batch: int | None = Field(None, gt=0)
    """The global batch train.lr was tuned for; required when lr_scaling is not none."""

    @model_validator(mode="after")
    def _scaling_has_reference(self) -> TrainLoopConfig:
        if self.lr_scaling != "none" and self.lr_reference_batch is None:
            raise ValueError(
                f"lr_scaling={self.lr_scaling} needs train.lr_reference_batch: the global batch "
                "train.lr was tuned for (e.g. train.lr_reference_batch=16)"
            )
        return self


class TrackingConfig(Section):
    tensorboard: bool = True
    mlflow: bool = False
    mlflow_uri: str | None = None
    wandb: bool = False
    wandb_project: str | None = None


class TrainConfig(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: MethodConfig = MethodConfig()
    train: TrainLoopConfig = TrainLoopConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _precision_fits_method(self) -> TrainConfig:
        if self.train.precision == "bf16" and self.method.kind in ("full", "qlora"):
            reason = "trains every weight" if self.method.kind == "full" else "has a 4-bit base"
            raise ValueError(
                f"train.precision=bf16 stores the frozen weights in bfloat16, but "
                f"method.kind={self.method.kind} {reason}; use train.precision=auto"
            )
        return self


# --------------------------------------------------------------------------------------------
# resolution: defaults < YAML < overrides
# --------------------------------------------------------------------------------------------

C = TypeVar("C", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value); the value is read as YAML (5, 1e-4, true, [q, v])."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(
            f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-4"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error (YAML keeps the last one
    silently, so `lr: 1e-4` above a forgotten `lr: 1e-2` would train at 1e-2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice; keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (model:, train:, ...)"
        )
    return data


def resolve(
    model_cls: type[C],
    yaml_path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    source: str = "config",
    options: dict[str, str] | None = None,
) -> C:
    """Build `model_cls` from defaults, then `base`, then a YAML file, then `a.b=value` overrides.

    `source` names where the values came from in error messages (a YAML path wins); `options`:
    `base` holds a CLI verb's options, named in errors as in `format_validation_error`.
    """
    merged: dict[str, Any] = dict(base or {})
    if yaml_path is not None:
        merged = _deep_merge(merged, load_yaml(yaml_path))
        source = str(yaml_path)
    given: dict[str, str] = {}  # dotted key -> the override that set it, for error messages
    for text in overrides or []:
        keys, value = parse_override(text)
        _check_path(model_cls, keys, text)
        _set_path(merged, keys, value)
        given[".".join(keys)] = text
    try:
        return model_cls.model_validate(merged)
    except ValidationError as exc:
        message = format_validation_error(exc, model_cls, source, given, options)
        raise ConfigError(message) from None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model class inside an annotation like `ModelConfig` or `ModelConfig | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_class(arg)
            if found is not None:
                return found
    return None


def _check_path(model_cls: type[BaseModel], keys: list[str], text: str) -> None:
    """Fail early on an override whose key does not exist, with the closest valid names."""
    cls: type[BaseModel] | None = model_cls
    for depth, key in enumerate(keys):
        if cls is None:
            prefix = ".".join(keys[:depth])
            raise ConfigError(f"override {text!r}: {prefix} is a value, not a section")
        fields = cls.model_fields
        if key not in fields:
            prefix = ".".join(keys[:depth])
            raise ConfigError(_unknown_key_message(prefix, key, list(fields), f"override {text!r}"))
        cls = _section_class(fields[key].annotation)


def _unknown_key_message(prefix: str, key: str, valid: list[str], source: str) -> str:
    dotted = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    full = [f"{prefix}.{name}" if prefix else name for name in (close or valid)]
    hint = "did you mean " if close else "valid keys here: "
    return f"{source}: unknown key '{dotted}'; {hint}{', '.join(full)}"


_PLURALS = {"an integer": "integers", "a number": "numbers", "a string": "strings"}


def _describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        fixed = origin is tuple and Ellipsis not in args and len(args) > 1
        inner = _describe_type(args[0]) if args else "value"
        plural = _PLURALS.get(inner, f"{inner} values")
        return f"a list of {len(args)} {plural}" if fixed else f"a list of {plural}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a section (indented key: value lines)"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _field_at(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    cls: type[BaseModel] | None = model_cls
    annotation: Any = None
    for part in loc:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return annotation
        annotation = cls.model_fields[part].annotation
        cls = _section_class(annotation)
    return annotation


def format_validation_error(
    exc: ValidationError,
    model_cls: type[BaseModel],
    source: str,
    overrides: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> str:
    """One line per error, naming the field and where its value came from: the override
    (`overrides`: dotted key -> `key=value` text) that set it, else `source`. With `options`
    (the values came from a CLI verb's options) the option is named instead: field -> option
    for the exceptions, else --field-name."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        named = tuple(p for p in loc if isinstance(p, str))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent_cls: type[BaseModel] | None = model_cls
            for part in named[:-1]:
                parent_cls = (
                    _section_class(parent_cls.model_fields[part].annotation) if parent_cls else None
                )
            valid = list(parent_cls.model_fields) if parent_cls else []
            lines.append(_unknown_key_message(".".join(named[:-1]), named[-1], valid, source))
            continue
        annotation = _field_at(model_cls, loc)
        got = err.get("input")
        expected = f"; expected {_describe_type(annotation)}" if annotation is not None else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "model_type":  # "Input should be a valid dictionary or instance of X"
            msg = "must be a section of keys, not a single value"
        if options is not None:  # a CLI verb's options: name the option, not the field
            option = options.get(dotted, "--" + dotted.replace("_", "-"))
            lines.append(f"{option}: {msg} (got {got!r}){expected}")
            continue
        came_from = _override_for(dotted, overrides or {}) or source
        lines.append(f"{came_from}: field '{dotted}': {msg} (got {got!r}){expected}")
    return "\n".join(lines)


def _override_for(dotted: str, overrides: dict[str, str]) -> str | None:
    """The override that set `dotted` or a section above it (model=... sets model.name)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if (text := overrides.get(".".join(parts[:end]))) is not None:
            return f"override {text}"
    return None


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {"a.b": value}: the dotted keys `a.b=c` overrides use.

    Anything but a dict (a run whose config could not be read) flattens to {}."""
    if not isinstance(tree, dict):
        return {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_keys(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML, saved with every run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
