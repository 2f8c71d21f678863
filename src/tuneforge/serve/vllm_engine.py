"""`--engine vllm`: the same API served by vLLM (continuous batching, paged attention, multi-LoRA).

The API layer is unchanged: it renders and tokenizes prompts exactly as for the transformers
engine (each adapter's own chat template) and hands this engine the token ids. vLLM runs them
with `enable_lora=True`, one `LoRARequest` per adapter; it keeps up to `max_loras` adapters on
the GPU and batches requests for different adapters together itself.

Classification (`constrain_to_labels`) scores every label the way the transformers engine does:
the summed log-probability of the label's answer tokens after the prompt, here read from vLLM's
`prompt_logprobs` of prompt + label.

vLLM needs Linux, CUDA and `pip install vllm`; without them `check_available` says so and
nothing else is imported. vLLM is imported only inside this module's functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import uuid
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.serve.errors import overloaded, server_error
from tuneforge.serve.jobs import Delta, Done, Failed, Job
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.registry import AdapterCatalog, AdapterSpec, BaseInfo

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM accepts for max_lora_rank


def check_available() -> None:
    """Raise a TuneforgeError saying what is missing if vLLM cannot run here."""
    import torch

    if not torch.cuda.is_available():
        raise TuneforgeError(
            "--engine vllm needs a CUDA GPU and none is available here; use --engine hf (the "
            "default), which serves the same API on CPU or GPU"
        )
    if importlib.util.find_spec("vllm") is None:
        raise TuneforgeError(
            "--engine vllm needs the vllm package, which is not installed: pip install vllm "
            "(Linux + CUDA); or use --engine hf (the default)"
        )


def _weights_location(base: str) -> tuple[str, str | None]:
    """(directory or hub id vLLM loads, GGUF sha256 or None); a GGUF is converted once first."""
    from tuneforge.models.sources import resolve_source

    source = resolve_source(base)
    if source.is_gguf:
        from tuneforge.models.gguf_import import materialize_gguf

        assert source.path is not None
        entry, sha, _ = materialize_gguf(source.path)
        return str(entry), sha
    if source.path is not None:
        return str(source.path), None
    return str(source.hub_id), None


def _register(catalog: AdapterCatalog, name: str, path: Any) -> AdapterSpec:
    """`catalog.register`, refusing what vLLM cannot load (DoRA) now rather than per request."""
    spec = catalog.register(name, path)
    if not spec.mixable:  # the catalog's LoRA-family adapters that PEFT cannot mix: DoRA
        catalog.unregister(name)
        raise TuneforgeError(
            f"adapter {name!r}: {spec.path} is a DoRA adapter, which vLLM cannot load; serve it "
            "with --engine hf"
        )
    return spec


class VllmEngine:
    """The `ServingEngine` interface on a vLLM `AsyncLLMEngine` with LoRA enabled."""

    name = "vllm"

    def __init__(
        self,
        llm: Any,
        catalog: AdapterCatalog,
        metrics: Metrics,
        max_queue: int,
        max_lora_rank: int = _LORA_RANKS[-1],
    ) -> None:
        self._llm = llm
        self.max_lora_rank = max_lora_rank
        """vLLM sizes its LoRA buffers for this rank at start: a larger adapter cannot load."""
        self.catalog = catalog
        self.context_length = catalog.base.context_length
        self.metrics = metrics
        self._max_queue = max_queue
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def create(
        cls,
        base: str,
        adapters: dict[str, Any],
        *,
        name: str | None,
        max_adapters: int,
        dtype: str,
        max_queue: int,
        metrics: Metrics,
    ) -> VllmEngine:
        check_available()
        from transformers import AutoConfig
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        from tuneforge.models.load import load_tokenizer
        from tuneforge.models.sources import resolve_source
        from tuneforge.models.tokenizer import stop_token_ids
        from tuneforge.serve.server import served_id

        location, sha = _weights_location(base)
        tokenizer = load_tokenizer(base)
        config = AutoConfig.from_pretrained(location)
        source = resolve_source(base)
        identity = (
            f"gguf:{sha}"
            if sha
            else (f"dir:{source.path.resolve()}" if source.path else f"hub:{source.hub_id}")
        )
        catalog = AdapterCatalog(
            BaseInfo(
                id=name or served_id(base),
                identity=identity,
                tokenizer=tokenizer,
                context_length=int(getattr(config, "max_position_embeddings", 2048)),
                stop_ids=frozenset(stop_token_ids(tokenizer)),
            )
        )
        for adapter_name, path in adapters.items():
            _register(catalog, adapter_name, path)
        rank = max([spec.rank for spec in catalog.adapters()] + [16])
        if rank > _LORA_RANKS[-1]:
            raise TuneforgeError(
                f"an adapter has LoRA rank {rank}; vLLM serves ranks up to {_LORA_RANKS[-1]}: "
                "serve it with --engine hf"
            )
        max_lora_rank = next(r for r in _LORA_RANKS if r >= rank)
        args = AsyncEngineArgs(
            model=location,
            dtype=dtype,
            enable_lora=True,
            max_loras=max_adapters,
            max_lora_rank=max_lora_rank,
            max_model_len=catalog.base.context_length,
        )
        return cls(
            AsyncLLMEngine.from_engine_args(args), catalog, metrics, max_queue, max_lora_rank
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()  # called from the app's lifespan, on its loop

    def stop(self) -> None:
        shutdown = getattr(self._llm, "shutdown", None)
        if callable(shutdown):
            shutdown()

    @property
    def healthy(self) -> bool:
        errored = getattr(self._llm, "errored", False)
        return self._loop is not None and not errored

    def incoming(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # vLLM batches continuously: nothing waits to form one

    def submit(self, job: Job) -> None:
        if len(self._tasks) >= self._max_queue:
            raise overloaded(f"the server has {self._max_queue} requests in flight; retry shortly")
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- adapters --------------------------------------------------------------------------------

    def _lora(self, spec: AdapterSpec | None) -> Any:
        if spec is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(spec.name, int(spec.key.removeprefix("tf")), str(spec.path))

    def load_adapter(self, name: str, path: str) -> AdapterSpec:
        spec = _register(self.catalog, name, path)
        if spec.rank > self.max_lora_rank:
            self.catalog.unregister(name)
            raise TuneforgeError(
                f"adapter {name!r} has LoRA rank {spec.rank}, above the {self.max_lora_rank} "
                "this vLLM server sized its LoRA buffers for at start (from the adapters given "
                "then); restart with it among --adapter, or use --engine hf"
            )
        try:
            self._call(self._llm.add_lora(self._lora(spec)))
        except BaseException:
            self.catalog.unregister(name)
            raise
        return spec

    def unload_adapter(self, name: str) -> None:
        spec = self.catalog.unregister(name)
        self._call(self._llm.remove_lora(int(spec.key.removeprefix("tf"))))

    def resident(self) -> list[str]:
        return [spec.name for spec in self.catalog.adapters()]

    def _call(self, coroutine: Any) -> Any:
        """Run a coroutine on the app's loop from an admin request's worker thread."""
        assert self._loop is not None, "the engine was not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # -- requests --------------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        try:
            if job.constrain_to_labels:
                await self._classify(job)
            else:
                await self._generate(job)
        except Exception as exc:  # vLLM's own errors: report them to this request only
            job.events.push(Failed(server_error(f"vLLM: {type(exc).__name__}: {exc}")))

    async def _generate(self, job: Job) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        p = job.params
        params = SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            stop_token_ids=sorted(job.target.stop_ids),
            seed=p.seed,
            skip_special_tokens=True,
        )
        request_id = uuid.uuid4().hex
        lora = self._lora(job.target.adapter)
        sent = ""
        prompt = TokensPrompt(prompt_token_ids=job.prompt_ids)
        async for output in self._llm.generate(prompt, params, request_id, lora_request=lora):
            if job.cancelled:
                await self._llm.abort(request_id)
                return
            completion = output.outputs[0]
            text = completion.text
            if job.stream and len(text) > len(sent) and text.startswith(sent):
                job.events.push(Delta(text[len(sent) :]))
                sent = text
            if output.finished:
                reason = "length" if completion.finish_reason == "length" else "stop"
                tokens = len(completion.token_ids)
                job.events.push(Done(text, reason, tokens))
                self.metrics.prompt_tokens.inc(len(job.prompt_ids), model=job.target.name)
                self.metrics.completion_tokens.inc(tokens, model=job.target.name)
                return
        # Without this the client would wait forever for an answer that is not coming.
        raise RuntimeError("the output stream ended before the request finished")

    async def _classify(self, job: Job) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        spec = job.target.adapter
        assert spec is not None and spec.label_set is not None
        lora = self._lora(spec)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        start = len(job.prompt_ids)

        async def score(sequence: list[int]) -> float:
            ids = job.prompt_ids + sequence
            final = None
            async for output in self._llm.generate(
                TokensPrompt(prompt_token_ids=ids), params, uuid.uuid4().hex, lora_request=lora
            ):
                final = output
            assert final is not None and final.prompt_logprobs is not None
            # prompt_logprobs[i] maps token ids (the actual one included) to their logprob.
            return sum(final.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids)))

        scores = await asyncio.gather(*(score(seq) for seq in spec.label_set.sequences))
        top = max(scores)
        weights = [math.exp(x - top) for x in scores]
        total = sum(weights)
        labels = spec.label_set.labels
        best = max(range(len(labels)), key=lambda i: scores[i])
        probs = {label: w / total for label, w in zip(labels, weights, strict=True)}
        tokens = len(spec.label_set.sequences[best])
        job.events.push(Done(labels[best], "stop", tokens, probs))
