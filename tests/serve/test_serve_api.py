"""The API through the official openai client: models, chat, streaming, completions, routing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_helpers import Reference

from conftest import LABELS

MODELS = ["tiny", "alpha", "beta", "gamma"]


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, runs) -> Reference:
    return Reference(tiny_model_dir, runs)


def chat(client, model: str, text: str, **kwargs):
    kwargs.setdefault("max_tokens", 10)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=ask(text), **kwargs)


def test_models_lists_the_base_and_every_adapter(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny", "alpha", "beta", "gamma", "cls"]
    assert all(m.owned_by == "tuneforge" for m in models)
    assert client.models.retrieve("alpha").model_extra["parent"] == "tiny"


def test_chat_completion_has_the_openai_shape_and_usage(client, engine):
    response = chat(client, "alpha", "hello there", max_tokens=6)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == "alpha"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    from tuneforge.serve.prompts import chat_prompt_ids

    tokenizer = engine.catalog.get("alpha").tokenizer
    assert response.usage.prompt_tokens == len(chat_prompt_ids(tokenizer, ask("hello there")))
    assert 1 <= response.usage.completion_tokens <= 6
    assert (
        response.usage.total_tokens
        == response.usage.prompt_tokens + response.usage.completion_tokens
    )


@pytest.mark.parametrize("model", MODELS)
def test_each_model_answers_as_it_does_alone(client, reference, model):
    got = chat(client, model, "What is apple?", max_tokens=12).choices[0].message.content
    assert got == reference.chat(model, ask("What is apple?"), 12)


def test_adapters_change_the_answer(client):
    answers = {
        m: chat(client, m, "What is apple?", max_tokens=12).choices[0].message.content
        for m in MODELS
    }
    assert len(set(answers.values())) == len(MODELS), answers


def test_streaming_gives_the_same_text_and_usage(client):
    plain = chat(client, "beta", "good morning", max_tokens=12)
    stream = chat(
        client,
        "beta",
        "good morning",
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == [plain.choices[0].finish_reason]
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_completions_plain_and_streaming(client, reference):
    expected = reference.completion("alpha", "The quick brown fox", 8)
    plain = client.completions.create(
        model="alpha", prompt="The quick brown fox", max_tokens=8, temperature=0
    )
    assert plain.object == "text_completion" and plain.choices[0].text == expected
    stream = client.completions.create(
        model="alpha", prompt="The quick brown fox", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == expected


def test_stop_strings_and_max_tokens(client, reference):
    full = reference.chat("alpha", ask("hello"), 12)
    assert len(full) >= 4, full
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    expected = full[: full.find(stop)]
    response = chat(client, "alpha", "hello", max_tokens=12, stop=[stop])
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"
    stream = chat(client, "alpha", "hello", max_tokens=12, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected
    short = chat(client, "alpha", "hello", max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


def test_sampling_is_seeded_per_request(client):
    def sample(seed):
        return chat(client, "beta", "hello", max_tokens=8, temperature=1.0, top_p=0.9, seed=seed)

    first = sample(7).choices[0].message.content
    assert sample(7).choices[0].message.content == first
    assert len({sample(seed).choices[0].message.content for seed in range(6)}) > 1


def test_classification_answers_with_a_label_and_its_probabilities(client):
    body = {"tuneforge": {"constrain_to_labels": True}}
    response = chat(client, "cls", "What is salmon?", extra_body=body)
    choice = response.choices[0]
    probs = choice.model_extra["label_probabilities"]
    assert set(probs) == set(LABELS) and abs(sum(probs.values()) - 1) < 1e-6
    assert choice.message.content == max(probs, key=probs.get)
    assert choice.finish_reason == "stop"
    stream = chat(client, "cls", "What is salmon?", extra_body=body, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].model_extra["label_probabilities"] == pytest.approx(probs)


def test_a_burst_of_concurrent_mixed_requests_loses_none(client, engine, reference):
    requests = [(MODELS[i % len(MODELS)], f"What is oak? item {i}") for i in range(64)]
    batches_before = engine.batches
    with ThreadPoolExecutor(max_workers=64) as pool:
        answers = list(
            pool.map(lambda r: chat(client, r[0], r[1]).choices[0].message.content, requests)
        )
    batches = engine.batches - batches_before
    assert len(answers) == 64
    for (model, text), answer in zip(requests, answers, strict=True):
        assert answer == reference.chat(model, ask(text), 10), (model, text)
    # Requests were batched together: far fewer model calls than requests, and the mixed
    # adapter batches held more than one model each.
    assert batches < 64 / 2, batches
    counts = engine.metrics.batch_adapters._counts[()]  # cumulative: <=1, <=2, ... +Inf
    assert counts[-1] > counts[0], "no batch mixed two models"


def test_a_client_that_leaves_mid_stream_stops_its_generation(server, client, engine):
    import httpx

    body = {
        "model": "tiny",
        "messages": ask("bye"),
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    before = engine.metrics.completion_tokens.value(model="tiny")
    headers = {"Authorization": f"Bearer {client.api_key}"}
    with httpx.stream(
        "POST", f"{server}/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert next(response.iter_lines()).startswith("data: ")  # started; now hang up
    chat(client, "alpha", "hi", max_tokens=2)  # runs after the abandoned batch has ended
    # The tiny base never ends a turn: run to the end, the row would report 400 tokens.
    # Cancelled, it stops within a step and reports none.
    assert engine.metrics.completion_tokens.value(model="tiny") == before


def test_a_row_that_breaks_its_batch_fails_alone(engine, monkeypatch):
    """An unexpected error in a shared generate call reruns the untouched requests one by one,
    so only the request that fails on its own gets the 500."""
    import asyncio

    from tuneforge.serve.jobs import Done, Failed, Job, JobEvents, SamplingParams

    real_generate = engine._generate

    def generate(jobs):
        if any(job.prompt_ids == [7, 7, 7] for job in jobs):
            raise RuntimeError("this row cannot be computed")
        real_generate(jobs)

    monkeypatch.setattr(engine, "_generate", generate)

    async def run_batch():
        target = engine.catalog.resolve("alpha")
        good, bad = (
            Job(target, ids, SamplingParams(2), JobEvents()) for ids in ([1, 2, 3], [7, 7, 7])
        )
        await asyncio.to_thread(engine._run, [good, bad])
        return await good.events.next(), await bad.events.next(), engine.batches

    before = engine.batches
    good_event, bad_event, after = asyncio.run(run_batch())
    assert isinstance(good_event, Done) and isinstance(bad_event, Failed)
    assert bad_event.error.status == 500 and "cannot be computed" in bad_event.error.message
    assert after == before + 1  # the good row's generate call, alone
