"""Fixtures for tests/serve: a tiny base, adapter runs with distinct weights, a live server.

Every server here is real: uvicorn on a free loopback port in a thread, driven by the official
`openai` client (or httpx for malformed requests the client cannot send). One torch thread,
as in tests/train: the machine may be shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import make_adapter_run, running_server

API_KEY = "test-key"
LABELS = ["fruit", "vegetable", "fish", "tree"]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Adapter runs on the session's tiny llama: two LoRA, one DoRA, one classification."""
    root = tmp_path_factory.mktemp("serve-runs")
    return {
        "alpha": make_adapter_run(root, tiny_model_dir, "alpha", 1),
        "beta": make_adapter_run(root, tiny_model_dir, "beta", 2),
        "gamma": make_adapter_run(root, tiny_model_dir, "gamma", 3, kind="dora", scale=2.0),
        "cls": make_adapter_run(root, tiny_model_dir, "cls", 4, labels=LABELS),
    }


@pytest.fixture(scope="session")
def engine(tiny_model_dir, runs) -> Any:
    from tuneforge.serve.server import build_engine

    return build_engine(
        str(tiny_model_dir), runs, name="tiny", max_adapters=8, max_batch_size=16, batch_wait_ms=10
    )


@pytest.fixture(scope="session")
def server(engine) -> Iterator[str]:
    """The base URL of a server with every adapter in `runs`, API key `API_KEY`."""
    from tuneforge.serve.app import create_app

    app = create_app(engine, engine.catalog, api_key=API_KEY, max_body_bytes=16_384)
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="session")
def client(server) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=120)
