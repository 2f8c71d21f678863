"""`--engine vllm` without a GPU: the engine's own logic against a fake `vllm` module.

No GPU and no vllm package exist here or in CI, so a small stand-in with vLLM's API names
(`AsyncEngineArgs`, `AsyncLLMEngine.from_engine_args/generate/abort/add_lora/remove_lora`,
`SamplingParams`, `vllm.inputs.TokensPrompt`, `vllm.lora.request.LoRARequest`, and
`RequestOutput`/`CompletionOutput`/`Logprob`-shaped outputs) is put in `sys.modules`, and
`torch.cuda.is_available` says True while the engine is built. The fake records what it is asked
(engine args, each request's prompt ids, SamplingParams and LoRARequest) and answers with canned
text, so the tests check what tuneforge sends to vLLM and what it makes of vLLM's answers, through
the same server, routes and official openai client as the transformers engine's tests.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import json
import math
import shutil
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import httpx
import pytest
from serve_helpers import running_server

from conftest import API_KEY, LABELS

AUTH = {"Authorization": f"Bearer {API_KEY}"}


# ---------------------------------------------------------------------------------------------
# the fake vllm
# ---------------------------------------------------------------------------------------------


@dataclass
class AsyncEngineArgs:
    """Only the fields the engine passes: an unknown keyword is a TypeError, as a typo would be."""

    model: str
    dtype: str = "auto"
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_model_len: int | None = None


@dataclass(kw_only=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    skip_special_tokens: bool = True
    logprobs: int | None = None
    prompt_logprobs: int | None = None


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: list[int]


@dataclass(frozen=True)
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


@dataclass(frozen=True)
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: Any = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class Seen:
    """One `generate` call as the fake received it."""

    prompt_ids: list[int]
    params: SamplingParams
    request_id: str
    lora: LoRARequest | None


def answer_pieces(lora: LoRARequest | None) -> list[str]:
    """The fake's answer, one token per piece: 'Hello from NAME' (NAME: the adapter, or base)."""
    return ["Hel", "lo", " from ", lora.lora_name if lora else "base"]


def default_logprob(token: int) -> float:
    return -1.0 - (token % 5) * 0.3


class FakeLLM:
    """`AsyncLLMEngine` as the engine uses it; records every call."""

    def __init__(self, args: AsyncEngineArgs) -> None:
        self.args = args
        self.requests: list[Seen] = []
        self.aborted: list[str] = []
        self.added: list[LoRARequest] = []
        self.removed: list[int] = []
        self.errored = False
        self.shut_down = False
        self.endless = False  # generate until aborted (a client that leaves mid-stream)
        self.fail: Exception | None = None
        self.cut_short = False  # the stream ends without a finished output
        self.token_logprob: Callable[[int], float] = default_logprob

    async def generate(
        self,
        prompt: TokensPrompt,
        sampling_params: SamplingParams,
        request_id: str,
        lora_request: LoRARequest | None = None,
    ) -> AsyncIterator[RequestOutput]:
        ids = list(prompt["prompt_token_ids"])
        self.requests.append(Seen(ids, sampling_params, request_id, lora_request))
        if self.fail is not None:
            raise self.fail
        if sampling_params.prompt_logprobs is not None:
            # vLLM: position 0 has no logprob; position i maps token ids to Logprob, the prompt's
            # own token included. A decoy (a more likely other token) checks which one is read.
            logprobs: list[dict[int, Logprob] | None] = [None]
            for token in ids[1:]:
                logprobs.append(
                    {
                        token: Logprob(self.token_logprob(token), rank=2),
                        token + 1: Logprob(-1e-3, 1),
                    }
                )
            done = CompletionOutput(0, "?", [1], finish_reason="length")
            yield RequestOutput(request_id, None, ids, logprobs, [done], True)
            return
        step = 0
        while self.endless and request_id not in self.aborted and step < 5000:
            step += 1
            await asyncio.sleep(0.002)
            text = "." * step
            yield RequestOutput(
                request_id, None, ids, None, [CompletionOutput(0, text, [5] * step)], False
            )
        if self.endless:
            return
        if self.cut_short:
            yield RequestOutput(
                request_id, None, ids, None, [CompletionOutput(0, "Hel", [1])], False
            )
            return
        pieces = answer_pieces(lora_request)
        limit = sampling_params.max_tokens or len(pieces)
        count = min(limit, len(pieces))
        for n in range(1, count + 1):
            await asyncio.sleep(0)
            finished = n == count
            reason = ("stop" if count == len(pieces) else "length") if finished else None
            output = CompletionOutput(
                0, "".join(pieces[:n]), list(range(100, 100 + n)), finish_reason=reason
            )
            yield RequestOutput(request_id, None, ids, None, [output], finished)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        self.added.append(lora_request)
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        self.removed.append(lora_id)
        return True

    def shutdown(self) -> None:
        self.shut_down = True


class FakeVllm:
    """The fake package: `modules()` for sys.modules, `engines` as `from_engine_args` built them."""

    def __init__(self) -> None:
        self.engines: list[FakeLLM] = []

    def modules(self) -> dict[str, types.ModuleType]:
        fake = self

        class AsyncLLMEngine(FakeLLM):
            @classmethod
            def from_engine_args(cls, engine_args: AsyncEngineArgs) -> AsyncLLMEngine:
                engine = cls(engine_args)
                fake.engines.append(engine)
                return engine

        def module(name: str, **attrs: Any) -> types.ModuleType:
            mod = types.ModuleType(name)
            # find_spec("vllm") (the engine's availability check) reads the spec of a module
            # already in sys.modules.
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            mod.__path__ = []
            for key, value in attrs.items():
                setattr(mod, key, value)
            return mod

        request = module("vllm.lora.request", LoRARequest=LoRARequest)
        lora = module("vllm.lora", request=request)
        inputs = module("vllm.inputs", TokensPrompt=TokensPrompt)
        sampling = module("vllm.sampling_params", SamplingParams=SamplingParams)
        arg_utils = module("vllm.engine.arg_utils", AsyncEngineArgs=AsyncEngineArgs)
        outputs = module(
            "vllm.outputs", RequestOutput=RequestOutput, CompletionOutput=CompletionOutput
        )
        root = module(
            "vllm",
            AsyncEngineArgs=AsyncEngineArgs,
            AsyncLLMEngine=AsyncLLMEngine,
            SamplingParams=SamplingParams,
            TokensPrompt=TokensPrompt,
            RequestOutput=RequestOutput,
            CompletionOutput=CompletionOutput,
            lora=lora,
            inputs=inputs,
            sampling_params=sampling,
            outputs=outputs,
        )
        return {
            "vllm": root,
            "vllm.lora": lora,
            "vllm.lora.request": request,
            "vllm.inputs": inputs,
            "vllm.sampling_params": sampling,
            "vllm.engine": module("vllm.engine", arg_utils=arg_utils),
            "vllm.engine.arg_utils": arg_utils,
            "vllm.outputs": outputs,
        }


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[FakeVllm]:
    fake = FakeVllm()
    with pytest.MonkeyPatch.context() as patch:
        for name, mod in fake.modules().items():
            patch.setitem(sys.modules, name, mod)
        yield fake


def build_vllm(base: Path, adapters: dict[str, Path], **kwargs: Any) -> Any:
    """`build_engine(engine="vllm")` as `tuneforge serve --engine vllm` calls it, 'on a GPU'."""
    import torch

    from tuneforge.serve.server import build_engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        return build_engine(str(base), adapters, engine="vllm", **kwargs)


# ---------------------------------------------------------------------------------------------
# a server on the fake
# ---------------------------------------------------------------------------------------------

SERVED = ("alpha", "beta", "cls")


@pytest.fixture(scope="module")
def engine(fake_vllm, tiny_model_dir, runs) -> Any:
    return build_vllm(
        tiny_model_dir, {name: runs[name] for name in SERVED}, name="tiny", max_adapters=3
    )


@pytest.fixture(scope="module")
def llm(engine, fake_vllm) -> FakeLLM:
    assert len(fake_vllm.engines) == 1
    return fake_vllm.engines[0]


@pytest.fixture(scope="module")
def server(engine) -> Iterator[str]:
    from tuneforge.serve.app import create_app

    with running_server(create_app(engine, engine.catalog, api_key=API_KEY)) as url:
        yield url


@pytest.fixture
def client(server, llm) -> Any:
    """The openai client on the fake-backed server; the fake's records start empty."""
    from openai import OpenAI

    llm.requests.clear()
    llm.aborted.clear()
    return OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat(client, model: str, text: str = "What is apple?", **kwargs):
    return client.chat.completions.create(model=model, messages=ask(text), **kwargs)


# ---------------------------------------------------------------------------------------------
# engine args
# ---------------------------------------------------------------------------------------------


def test_engine_args_enable_lora_with_a_rank_that_covers_the_adapters(
    engine, llm, tiny_model_dir, runs
):
    from transformers import AutoConfig

    args = llm.args
    assert args.model == str(tiny_model_dir) and args.dtype == "auto"
    assert args.enable_lora is True and args.max_loras == 3
    ranks = [engine.catalog.get(name).rank for name in SERVED]
    assert ranks == [4, 4, 4]
    assert args.max_lora_rank == 16  # vLLM's smallest usual rank (its default) covers rank 4
    assert args.max_model_len == AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    assert engine.name == "vllm" and engine.context_length == args.max_model_len
    assert [spec.name for spec in engine.catalog.adapters()] == list(SERVED)
    assert llm.added == []  # adapters are loaded by vLLM on first use, from each LoRARequest


@pytest.mark.parametrize(("rank", "expected"), [(40, 64), (300, 320), (512, 512)])
def test_max_lora_rank_is_the_smallest_allowed_one_over_the_largest_adapter(
    fake_vllm, tiny_model_dir, runs, tmp_path, rank, expected
):
    big = tmp_path / "big"
    shutil.copytree(runs["alpha"], big)
    config_path = big / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "r": rank}), encoding="utf-8")
    build_vllm(tiny_model_dir, {"alpha": runs["alpha"], "big": big}, max_adapters=2)
    args = fake_vllm.engines[-1].args
    assert args.max_lora_rank == expected and args.enable_lora and args.max_loras == 2


def with_rank(run: Path, rank: int, to: Path) -> Path:
    shutil.copytree(run, to)
    config_path = to / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "r": rank}), encoding="utf-8")
    return to


def test_ranks_vllm_cannot_hold_are_refused_with_the_reason(
    fake_vllm, tiny_model_dir, runs, tmp_path
):
    from tuneforge.errors import TuneforgeError
    from tuneforge.serve.app import create_app

    huge = with_rank(runs["alpha"], 600, tmp_path / "huge")
    with pytest.raises(TuneforgeError, match="rank 600; vLLM serves ranks up to 512"):
        build_vllm(tiny_model_dir, {"huge": huge})
    # Started with rank-4 adapters only: buffers for rank 16, so a rank-40 adapter cannot load.
    engine = build_vllm(tiny_model_dir, {"alpha": runs["alpha"]}, name="tiny")
    llm = fake_vllm.engines[-1]
    big = with_rank(runs["alpha"], 40, tmp_path / "big")
    with running_server(create_app(engine, engine.catalog, api_key=API_KEY)) as url:
        refused = httpx.post(
            f"{url}/admin/adapters",
            json={"name": "big", "path": str(big)},
            headers=AUTH,
            timeout=60,
        )
        assert refused.status_code == 400, refused.text
        assert "rank 40, above the 16" in refused.json()["error"]["message"]
        assert engine.catalog.get("big") is None and llm.added == []


# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------


def test_each_adapter_reaches_vllm_with_its_own_lora_request(client, engine, llm, runs):
    from tuneforge.serve.prompts import chat_prompt_ids

    for model in ("tiny", "alpha", "beta", "alpha"):
        chat(client, model, f"hello {model}", max_tokens=8)
    assert len(llm.requests) == 4
    base, alpha, beta, alpha_again = (seen.lora for seen in llm.requests)
    assert base is None
    assert alpha.lora_name == "alpha" and Path(alpha.lora_path) == runs["alpha"]
    assert beta.lora_name == "beta" and Path(beta.lora_path) == runs["beta"]
    assert alpha_again == alpha  # the same adapter keeps its id: vLLM caches it by id
    assert alpha.lora_int_id != beta.lora_int_id and min(alpha.lora_int_id, beta.lora_int_id) > 0
    for seen, model in zip(llm.requests, ("tiny", "alpha", "beta", "alpha"), strict=True):
        target = engine.catalog.resolve(model)
        assert seen.prompt_ids == chat_prompt_ids(target.tokenizer, ask(f"hello {model}"))
        assert seen.params.stop_token_ids == sorted(target.stop_ids) and seen.params.stop_token_ids
    assert len({seen.request_id for seen in llm.requests}) == 4


def test_openai_sampling_parameters_map_onto_sampling_params(client, llm):
    chat(client, "alpha", max_tokens=7, temperature=0.7, top_p=0.9, stop=["x", "yz"], seed=11)
    chat(client, "beta", temperature=0, stop="END")
    chat(client, "tiny")  # nothing set: OpenAI's defaults, max_tokens from the server's default
    explicit, greedy, defaults = (seen.params for seen in llm.requests)
    assert (explicit.temperature, explicit.top_p, explicit.max_tokens) == (0.7, 0.9, 7)
    assert (explicit.stop, explicit.seed, explicit.n) == (["x", "yz"], 11, 1)
    assert explicit.skip_special_tokens and explicit.prompt_logprobs is None
    assert (greedy.temperature, greedy.stop, greedy.seed) == (0.0, ["END"], None)
    assert (defaults.temperature, defaults.top_p) == (1.0, 1.0)
    assert defaults.stop is None and defaults.seed is None
    assert defaults.max_tokens == 256  # create_app's default_max_tokens (the room is larger)


def test_chat_completion_returns_vllms_text_in_openai_shape(client, engine):
    before = engine.metrics.completion_tokens.value(model="beta")
    response = chat(client, "beta", max_tokens=10)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == "beta"
    assert choice.message.role == "assistant" and choice.message.content == "Hello from beta"
    assert choice.finish_reason == "stop"
    from tuneforge.serve.prompts import chat_prompt_ids

    prompt = chat_prompt_ids(engine.catalog.get("beta").tokenizer, ask("What is apple?"))
    assert response.usage.prompt_tokens == len(prompt)
    assert response.usage.completion_tokens == 4 and response.usage.total_tokens == len(prompt) + 4
    assert engine.metrics.completion_tokens.value(model="beta") == before + 4
    short = chat(client, "beta", max_tokens=2)  # vLLM stopped at max_tokens: 'length'
    assert (
        short.choices[0].message.content == "Hello" and short.choices[0].finish_reason == "length"
    )
    assert short.usage.completion_tokens == 2


def test_streaming_chat_sends_each_new_piece_of_vllms_text(client):
    stream = chat(
        client, "alpha", max_tokens=10, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content
    ]
    assert pieces == answer_pieces(LoRARequest("alpha", 1))  # one delta per cumulative output
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_completions_plain_and_streaming(client, engine, llm):
    from tuneforge.serve.prompts import completion_prompt_ids

    plain = client.completions.create(model="alpha", prompt="The quick brown fox", max_tokens=9)
    assert plain.object == "text_completion" and plain.choices[0].text == "Hello from alpha"
    assert plain.choices[0].finish_reason == "stop"
    stream = client.completions.create(
        model="tiny", prompt="The quick brown fox", max_tokens=3, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == "Hello from "
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]
    alpha_ids = completion_prompt_ids(engine.catalog.get("alpha").tokenizer, "The quick brown fox")
    assert llm.requests[0].prompt_ids == alpha_ids and llm.requests[0].lora.lora_name == "alpha"
    assert llm.requests[1].lora is None and llm.requests[1].params.max_tokens == 3


def test_classification_picks_the_label_with_the_highest_summed_prompt_logprob(
    client, engine, llm, monkeypatch
):
    from tuneforge.serve.prompts import chat_prompt_ids

    spec = engine.catalog.get("cls")
    sequences = dict(zip(spec.label_set.labels, spec.label_set.sequences, strict=True))
    favoured = set(sequences["fish"])

    def logprob(token: int) -> float:  # fish's answer tokens are likely, the rest less so
        return -0.05 if token in favoured else default_logprob(token) - 1.0

    monkeypatch.setattr(llm, "token_logprob", logprob)
    scores = {label: sum(logprob(t) for t in seq) for label, seq in sequences.items()}
    assert max(scores, key=scores.get) == "fish"  # the fake's logprobs do favour fish
    top = max(scores.values())
    total = sum(math.exp(s - top) for s in scores.values())
    expected = {label: math.exp(s - top) / total for label, s in scores.items()}

    body = {"tuneforge": {"constrain_to_labels": True}}
    response = chat(client, "cls", "What is salmon?", extra_body=body)
    choice = response.choices[0]
    assert choice.message.content == "fish" and choice.finish_reason == "stop"
    assert choice.model_extra["label_probabilities"] == pytest.approx(expected)
    assert response.usage.completion_tokens == len(sequences["fish"])

    # One scoring request per label: prompt + that label's answer tokens, on the cls adapter.
    prompt = chat_prompt_ids(spec.tokenizer, ask("What is salmon?"))
    assert sorted(seen.prompt_ids for seen in llm.requests) == sorted(
        prompt + seq for seq in sequences.values()
    )
    for seen in llm.requests:
        assert seen.lora is not None and seen.lora.lora_name == "cls"
        assert Path(seen.lora.lora_path) == spec.path
        params = seen.params
        assert (params.prompt_logprobs, params.max_tokens, params.temperature) == (0, 1, 0.0)

    stream = list(chat(client, "cls", "What is salmon?", extra_body=body, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "fish"
    assert stream[-1].choices[0].model_extra["label_probabilities"] == pytest.approx(expected)
    assert set(expected) == set(LABELS)


def test_a_client_that_leaves_mid_stream_aborts_its_vllm_request(server, client, llm, monkeypatch):
    monkeypatch.setattr(llm, "endless", True)
    body = {"model": "tiny", "messages": ask("bye"), "max_tokens": 400, "stream": True}
    with httpx.stream(
        "POST", f"{server}/v1/chat/completions", json=body, headers=AUTH, timeout=30
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk
        assert next(line for line in lines if line.startswith("data: ")).startswith("data: {")
    deadline = time.monotonic() + 20
    while not llm.aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert llm.aborted == [llm.requests[0].request_id]


def test_a_vllm_error_fails_only_that_request(server, client, llm, monkeypatch):
    monkeypatch.setattr(llm, "fail", RuntimeError("CUDA out of memory"))
    body = {"model": "alpha", "messages": ask("hi"), "max_tokens": 4}
    response = httpx.post(f"{server}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["message"] == "vLLM: RuntimeError: CUDA out of memory"
    assert error["type"] == "server_error"
    monkeypatch.setattr(llm, "fail", None)
    assert chat(client, "alpha", max_tokens=4).choices[0].message.content == "Hello from alpha"


def test_a_stream_that_ends_unfinished_fails_instead_of_hanging(server, client, llm, monkeypatch):
    monkeypatch.setattr(llm, "cut_short", True)
    body = {"model": "alpha", "messages": ask("hi"), "max_tokens": 4}
    response = httpx.post(f"{server}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 500
    assert "ended before the request finished" in response.json()["error"]["message"]
    monkeypatch.setattr(llm, "cut_short", False)
    assert chat(client, "alpha", max_tokens=4).choices[0].message.content == "Hello from alpha"


def test_health_follows_vllms_state(server, llm, monkeypatch):
    assert httpx.get(f"{server}/health").status_code == 200
    monkeypatch.setattr(llm, "errored", True)
    assert httpx.get(f"{server}/health").status_code == 503


# ---------------------------------------------------------------------------------------------
# adapters at run time, and what vLLM cannot serve
# ---------------------------------------------------------------------------------------------


def test_admin_load_and_unload_add_and_remove_the_lora(fake_vllm, tiny_model_dir, runs):
    from tuneforge.serve.app import create_app

    engine = build_vllm(tiny_model_dir, {"alpha": runs["alpha"]}, name="tiny", max_adapters=2)
    llm = fake_vllm.engines[-1]
    with running_server(create_app(engine, engine.catalog, api_key=API_KEY)) as url:
        loaded = httpx.post(
            f"{url}/admin/adapters",
            json={"name": "beta", "path": str(runs["beta"])},
            headers=AUTH,
            timeout=60,
        )
        assert loaded.status_code == 201, loaded.text
        assert loaded.json()["resident"] is True
        [added] = llm.added
        assert added.lora_name == "beta" and Path(added.lora_path) == runs["beta"]
        body = {"model": "beta", "messages": ask("hi"), "max_tokens": 9}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
        assert reply.json()["choices"][0]["message"]["content"] == "Hello from beta"
        assert llm.requests[-1].lora == added  # requests use the id vLLM loaded it under
        alpha_id = int(engine.catalog.get("alpha").key.removeprefix("tf"))
        assert added.lora_int_id != alpha_id

        gone = httpx.delete(f"{url}/admin/adapters/beta", headers=AUTH, timeout=60)
        assert gone.status_code == 200 and llm.removed == [added.lora_int_id]
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
        assert reply.status_code == 404

        again = httpx.post(
            f"{url}/admin/adapters",
            json={"name": "beta", "path": str(runs["beta"])},
            headers=AUTH,
            timeout=60,
        )
        assert again.status_code == 201
        # A reloaded adapter gets a fresh id, so vLLM never serves the old weights from its cache.
        assert llm.added[-1].lora_int_id not in (added.lora_int_id, alpha_id)
    assert llm.shut_down  # the app's lifespan stopped the engine


def test_dora_adapters_are_refused_since_vllm_cannot_load_them(fake_vllm, tiny_model_dir, runs):
    from tuneforge.errors import TuneforgeError
    from tuneforge.serve.app import create_app

    with pytest.raises(TuneforgeError, match="DoRA"):
        build_vllm(tiny_model_dir, {"gamma": runs["gamma"]}, name="tiny")

    engine = build_vllm(tiny_model_dir, {"alpha": runs["alpha"]}, name="tiny")
    llm = fake_vllm.engines[-1]
    with running_server(create_app(engine, engine.catalog, api_key=API_KEY)) as url:
        refused = httpx.post(
            f"{url}/admin/adapters",
            json={"name": "gamma", "path": str(runs["gamma"])},
            headers=AUTH,
            timeout=60,
        )
        assert refused.status_code == 400 and "DoRA" in refused.json()["error"]["message"]
        assert engine.catalog.get("gamma") is None and llm.added == []
