"""The playground's round trip through the serve API on real tiny runs: in-process and remote.

Each answer is checked against the model run alone (greedy `generate` on the same chat prompt):
the base pane must show the base model's answer, the adapter pane the adapter's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ui_helpers import running_server

from keyword_task import SYSTEM_PROMPT as SYSTEM
from tuneforge.ui.app import create_app
from tuneforge.ui.playground import RemoteModels

MAX_TOKENS = 6
PROMPT = "What is apple? item 7"


def greedy(model: Any, tokenizer: Any, messages: list[dict[str, str]]) -> str:
    import torch

    from tuneforge.models.tokenizer import stop_token_ids
    from tuneforge.serve.prompts import chat_prompt_ids

    ids = chat_prompt_ids(tokenizer, messages)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
        )
    new = out[0, len(ids) :].tolist()
    stops = set(stop_token_ids(tokenizer))
    cut = next((i for i, token in enumerate(new) if token in stops), len(new))
    return tokenizer.decode(new[:cut], skip_special_tokens=True)


@pytest.fixture(scope="module")
def expected(served_runs, tiny_model_dir) -> dict[str, str]:
    """The answers of the base, alpha and loud run on their own."""
    from tuneforge.config import ModelConfig
    from tuneforge.models.load import load_model
    from tuneforge.models.trained import load_trained

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    base, tokenizer, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    answers = {"base": greedy(base, tokenizer, messages)}
    for name in ("alpha", "loud"):
        model, run_tokenizer, _ = load_trained(served_runs / name)
        answers[name] = greedy(model, run_tokenizer, messages)
    assert answers["loud"] != answers["base"]
    return answers


def ask(client: TestClient, adapter: str, target: str) -> dict[str, Any]:
    response = client.post(
        "/api/chat",
        json={
            "adapter": adapter,
            "target": target,
            "system": SYSTEM,
            "prompt": PROMPT,
            "max_tokens": MAX_TOKENS,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_in_process_round_trip(served_runs, tiny_model_dir, expected):
    with TestClient(create_app(served_runs)) as client:
        page = client.get("/playground?adapter=alpha").text
        assert '<option value="alpha" data-system="Classify the item.' in page
        assert 'data-example="What is apple? item 100"' in page  # from the run's test split

        base = ask(client, "alpha", "base")
        tuned = ask(client, "alpha", "adapter")
        assert base["text"] == expected["base"]
        assert tuned["text"] == expected["alpha"]
        assert base["model"] == Path(tiny_model_dir).name and tuned["model"] == "alpha"
        assert base["target"] == "base" and tuned["completion_tokens"] >= 1

        engine = client.app.state.models._engine
        assert ask(client, "loud", "adapter")["text"] == expected["loud"]
        assert ask(client, "loud", "base")["text"] == expected["base"]
        assert client.app.state.models._engine is engine  # same base: one engine, two adapters
    assert not engine.healthy  # stopped with the app


def test_round_trip_through_a_running_serve(served_runs, tiny_model_dir, expected):
    from tuneforge.serve.app import create_app as create_serve_app
    from tuneforge.serve.server import build_engine

    engine = build_engine(str(tiny_model_dir), {"loud": served_runs / "loud"}, name="tiny")
    serve_app = create_serve_app(engine, engine.catalog, api_key="k")
    with running_server(serve_app) as url:
        models = RemoteModels(f"{url}/v1", api_key="k", runs_root=served_runs)
        client = TestClient(create_app(served_runs, models))
        page = client.get("/playground").text
        assert '<option value="loud"' in page and "(on tiny)" in page
        assert 'data-system="Classify the item.' in page
        assert '<option value="alpha"' not in page  # not served there
        base = ask(client, "loud", "base")
        assert (base["text"], base["model"]) == (expected["base"], "tiny")
        assert ask(client, "loud", "adapter")["text"] == expected["loud"]
        response = client.post("/api/chat", json={"adapter": "alpha", "prompt": "hi"})
        assert response.status_code == 404 and "alpha" in response.json()["error"]


def test_unreachable_serve_is_explained(tiny_runs):
    from ui_helpers import free_socket

    sock = free_socket()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    try:
        client = TestClient(create_app(tiny_runs, RemoteModels(f"http://127.0.0.1:{port}")))
        page = client.get("/playground").text
        assert 'id="pg-error"' in page and "cannot list the models" in page
        response = client.post("/api/chat", json={"adapter": "alpha", "prompt": "hi"})
        assert response.status_code == 502
    finally:
        sock.close()
