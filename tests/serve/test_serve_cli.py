"""`tuneforge serve` on the command line: bad arguments exit 2 with a message; a real run serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import free_socket
from typer.testing import CliRunner

from tuneforge.cli.main import app


def invoke(*args):
    return CliRunner().invoke(app, ["serve", *map(str, args)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--adapter", "noequals"], "expected NAME=RUN_DIR"),
        (["--adapter", "a=x", "--adapter", "a=y"], "given twice"),
        (["--engine", "tgi"], "expected hf or vllm"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_options_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_bad_adapters_exit_2_before_serving(tiny_model_dir, runs, tmp_path):
    for adapter, message in [
        (f"../up={runs['alpha']}", "adapter name"),
        (f"x={tmp_path / 'missing'}", "no such directory"),
    ]:
        result = invoke("--base", tiny_model_dir, "--adapter", adapter)
        assert result.exit_code == 2, result.output
        assert message in result.stderr


def test_vllm_engine_says_what_is_missing(tiny_model_dir):
    result = invoke("--base", tiny_model_dir, "--engine", "vllm")
    assert result.exit_code == 2
    assert "--engine vllm needs" in result.stderr


def test_serve_runs_and_answers(tiny_model_dir, runs, tmp_path):
    """The installed entry point, as a user runs it: serve, answer over HTTP, stop on Ctrl-C."""
    from openai import OpenAI

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, OMP_NUM_THREADS="1", TUNEFORGE_CACHE=str(tmp_path / "cache"))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    command = [
        sys.executable, "-m", "tuneforge", "serve", "--base", str(tiny_model_dir),
        "--name", "tiny", "--adapter", f"alpha={runs['alpha']}", "--port", str(port),
        "--api-key", "k", "--threads", "1", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 300  # a loaded machine can take minutes to import torch
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 300 s"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "alpha"]
        reply = client.chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage.completion_tokens >= 1
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "serving tiny, alpha (transformers engine)" in output
