"""Adapters at run time: admin load/unload, LRU eviction, checks on what may be served."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import Reference, make_adapter_run, running_server

from conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def extra_runs(tmp_path_factory, tiny_model_dir) -> dict:
    """Runs the admin tests load: a new LoRA, and runs that must be refused."""
    from tuneforge.models.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("admin-runs")
    other_base = build_tiny_causal_lm(root / "other-base", seed=1)
    full = root / "full"
    shutil.copytree(tiny_model_dir, full)
    shutil.copy(make_adapter_run(root, tiny_model_dir, "tmp", 9) / "config.yaml", full)
    return {
        "delta": make_adapter_run(root, tiny_model_dir, "delta", 5),
        "ia3": make_adapter_run(root, tiny_model_dir, "ia3", 6, kind="ia3"),
        "other": make_adapter_run(root, other_base, "other", 7),
        "full": full,
    }


@pytest.fixture(scope="module")
def small(tiny_model_dir, runs):
    """A server holding at most 2 adapters in memory, with alpha, beta and cls registered."""
    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import build_engine

    adapters = {name: runs[name] for name in ("alpha", "beta", "cls")}
    engine = build_engine(str(tiny_model_dir), adapters, name="tiny", max_adapters=2)
    with running_server(create_app(engine, engine.catalog, api_key=API_KEY)) as url:
        yield engine, url


@pytest.fixture(scope="module")
def reference(tiny_model_dir, runs, extra_runs) -> Reference:
    return Reference(tiny_model_dir, {**runs, **extra_runs})


def chat(url: str, model: str, text: str = "What is apple?") -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 8,
        "temperature": 0,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)


def answer(url: str, model: str, text: str = "What is apple?") -> str:
    response = chat(url, model, text)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def ask(text: str = "What is apple?") -> list[dict]:
    return [{"role": "user", "content": text}]


def test_adapters_load_on_demand_and_the_least_recently_used_is_evicted(small, reference):
    engine, url = small
    assert engine.resident() == []
    answer(url, "alpha")
    answer(url, "beta")
    assert engine.resident() == ["alpha", "beta"]
    answer(url, "alpha")  # alpha is now the most recent: beta goes next
    answer(url, "cls")
    assert engine.resident() == ["alpha", "cls"]
    assert engine.metrics.adapter_evictions.value() >= 1
    assert answer(url, "beta") == reference.chat("beta", ask(), 8)  # reloaded, same output
    assert engine.resident() == ["cls", "beta"]


def test_a_batch_needing_more_adapters_than_fit_is_split(small, reference):
    _, url = small
    jobs = [
        (name, f"What is carrot? {i}")
        for i in range(4)
        for name in ("alpha", "beta", "cls", "tiny")
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: answer(url, *job), jobs))
    for (name, text), got in zip(jobs, answers, strict=True):
        assert got == reference.chat(name, ask(text), 8)


def test_admin_load_and_unload(small, extra_runs, reference):
    engine, url = small
    admin = f"{url}/admin/adapters"
    response = httpx.post(
        admin, json={"name": "delta", "path": str(extra_runs["delta"])}, headers=AUTH, timeout=60
    )
    assert response.status_code == 201, response.text
    assert response.json()["resident"] is True and "delta" in engine.resident()
    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]
    assert "delta" in [m["id"] for m in models]
    assert answer(url, "delta") == reference.chat("delta", ask(), 8)
    listed = httpx.get(admin, headers=AUTH).json()["data"]
    assert {a["name"] for a in listed} == {"alpha", "beta", "cls", "delta"}

    again = httpx.post(
        admin, json={"name": "delta", "path": str(extra_runs["delta"])}, headers=AUTH
    )
    assert again.status_code == 409

    assert httpx.delete(f"{admin}/delta", headers=AUTH).json() == {
        "name": "delta",
        "unloaded": True,
    }
    assert "delta" not in engine.resident()
    assert chat(url, "delta").status_code == 404
    assert httpx.delete(f"{admin}/delta", headers=AUTH).status_code == 404
    base = httpx.delete(f"{admin}/tiny", headers=AUTH)
    assert base.status_code == 400 and "is the base model" in base.json()["error"]["message"]


@pytest.mark.parametrize(
    ("name", "run", "message"),
    [
        ("../evil", "delta", "adapter name"),
        ("a/b", "delta", "adapter name"),
        ("..", "delta", "adapter name"),
        ("tiny", "delta", "base model's id"),
        ("x", None, "no such directory"),
        ("x", "ia3", "LoRA-family"),
        ("x", "other", "trained on model"),
        ("x", "full", "full fine-tune"),
    ],
)
def test_admin_refuses_what_cannot_be_served(small, extra_runs, tmp_path, name, run, message):
    _, url = small
    path = str(extra_runs[run]) if run else str(tmp_path / "missing")
    response = httpx.post(
        f"{url}/admin/adapters", json={"name": name, "path": path}, headers=AUTH, timeout=60
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert name not in [spec.name for spec in small[0].catalog.adapters()] or name == "tiny"


def test_admin_routes_need_an_api_key_to_exist(tiny_model_dir, extra_runs):
    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import build_engine

    engine = build_engine(str(tiny_model_dir), name="tiny")
    with running_server(create_app(engine, engine.catalog)) as url:
        body = {"name": "delta", "path": str(extra_runs["delta"])}
        response = httpx.post(f"{url}/admin/adapters", json=body)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "admin_disabled"
        assert httpx.get(f"{url}/v1/models").status_code == 200  # no key: the API is open
