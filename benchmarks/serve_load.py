"""Load on `tuneforge serve`: one base, 3 LoRA adapters, many concurrent requests.

    python benchmarks/serve_load.py [--requests 1000] [--concurrency 16] [--max-tokens 8]

Starts `tuneforge serve` (the CLI, in its own process) on loopback with `--base` (SmolLM2-135M
by default) and 3 LoRA adapters, then sends `--requests` chat requests, `--concurrency` at a
time, in two kinds of traffic:

- mixed: the adapters interleaved (request i goes to adapter i % 3), which the server batches
  together with PEFT's mixed-adapter batches;
- single: the same requests, all to one adapter.

Each kind runs twice, in the order mixed, single, single, mixed (halves of `--requests` each),
so a drift in the machine's background load weighs on both kinds alike. Prompts are the
questions of the shipped demo dataset (src/tuneforge/data/demo/support_intents.csv), greedy,
`--max-tokens` new tokens.

The adapters are LoRA r16 on every linear layer (tuneforge's default method), initialised with
seeded random weights and saved as `tuneforge train` run directories: how fast the server
batches does not depend on what the weights learned, and no training is needed.

Prints one JSON line: errors (must be 0), p50/p95 latency (ms) and requests/s of the mixed
traffic, the same for single-adapter traffic, and mixed_over_single = mixed requests/s over
single requests/s (goal >= 0.9). Timings on a shared machine are noisy: the load average is
recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "src/tuneforge/data/demo/support_intents.csv"
ADAPTERS = ("billing", "shipping", "returns")
GOAL_RATIO = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--requests", type=int, default=1000, help="Requests per kind of traffic.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="Server option.")
    parser.add_argument("--threads", type=int, default=None, help="Server torch threads.")
    parser.add_argument("--workdir", default=None, help="Keep the adapter runs here (reused).")
    return parser.parse_args(argv)


def make_adapters(base: str, root: Path) -> dict[str, Path]:
    """3 LoRA run directories on `base` with distinct seeded random weights (reused if present)."""
    runs = {name: root / name for name in ADAPTERS}
    if all((run / "adapter_model.safetensors").is_file() for run in runs.values()):
        return runs
    import torch

    from tuneforge.config import TrainConfig, resolve, to_yaml
    from tuneforge.models.adapters import attach_method
    from tuneforge.models.load import load_model
    from tuneforge.models.tokenizer import save_tokenizer

    for seed, run in enumerate(runs.values()):
        cfg = resolve(TrainConfig, None, [f"model.name={base}", "tracking.tensorboard=false"])
        model, tokenizer, info = load_model(cfg.model)
        model = attach_method(model, cfg.method)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:  # peft starts B at zero: the adapter would be a no-op
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        run.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(run)
        save_tokenizer(tokenizer, run)
        (run / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        (run / "manifest.json").write_text(json.dumps({"model": info.to_dict()}), encoding="utf-8")
    return runs


def prompts() -> list[str]:
    with DEMO.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    args: argparse.Namespace, runs: dict[str, Path], port: int, log: Any
) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuneforge", "serve", "--base", args.base, "--port", str(port)]
    for name, run in runs.items():
        command += ["--adapter", f"{name}={run}"]
    command += ["--max-batch-size", str(args.max_batch_size), "--log-level", "warning"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.batch_wait_ms is not None:
        command += ["--batch-wait-ms", str(args.batch_wait_ms)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    # A file, not a pipe: nobody reads a pipe during the run, and a full one would block the server.
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def tail(log: Any) -> str:
    log.seek(0)
    return log.read()[-4000:]


async def wait_healthy(url: str, process: subprocess.Popen, log: Any, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{tail(log)}")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the server did not become healthy")


async def run_traffic(
    url: str, models: list[str], texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Send one request per model in `models` (prompt i from `texts`), `concurrency` at a time."""
    import httpx

    limit = asyncio.Semaphore(args.concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    tokens = 0

    async def one(client: httpx.AsyncClient, i: int, model: str) -> None:
        nonlocal tokens
        body = {
            "model": model,
            "messages": [{"role": "user", "content": texts[i % len(texts)]}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        async with limit:
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/chat/completions", json=body)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    return
                tokens += response.json()["usage"]["completion_tokens"]
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client, i, model) for i, model in enumerate(models)))
        seconds = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "tokens": tokens, "seconds": seconds}


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for part in parts for x in part["latencies"])
    seconds = sum(part["seconds"] for part in parts)
    done = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100) if done >= 2 else [0.0] * 99
    return {
        "requests": done + sum(len(part["errors"]) for part in parts),
        "errors": sum(len(part["errors"]) for part in parts),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(1000 * quantiles[94], 1),
        "requests_per_s": round(done / seconds, 2),
        "tokens_per_s": round(sum(part["tokens"] for part in parts) / seconds, 2),
        "seconds": round(seconds, 1),
    }


def batch_stats(metrics: str) -> dict[str, float]:
    values = {}
    for line in metrics.splitlines():
        for name in ("tuneforge_batch_rows_sum", "tuneforge_batch_rows_count"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    count = values.get("tuneforge_batch_rows_count", 0.0)
    return {
        "batches": int(count),
        "mean_batch_rows": round(values.get("tuneforge_batch_rows_sum", 0.0) / count, 2)
        if count
        else 0.0,
    }


async def drive(
    url: str, process: subprocess.Popen, log: Any, runs: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up, then the traffic in the order mixed, single, single, mixed."""
    import httpx

    await wait_healthy(url, process, log)
    texts = prompts()
    names = list(runs)
    warm = await run_traffic(url, names * 2, texts, args)  # loads every adapter
    if warm["errors"]:
        raise RuntimeError(f"warm-up failed: {warm['errors'][:3]}")
    half = args.requests // 2
    mixed_models = [names[i % len(names)] for i in range(half)]
    single_models = [names[0]] * half
    results: dict[str, list[dict[str, Any]]] = {"mixed": [], "single": []}
    for kind in ("mixed", "single", "single", "mixed"):
        models = mixed_models if kind == "mixed" else single_models
        results[kind].append(await run_traffic(url, models, texts, args))
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{url}/metrics")).text
    mixed, single = summarize(results["mixed"]), summarize(results["single"])
    return {"mixed": mixed, "single": single, **batch_stats(metrics)}


async def bench(args: argparse.Namespace, runs: dict[str, Path]) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = start_server(args, runs, port, log)
        try:
            return await drive(f"http://127.0.0.1:{port}", process, log, runs, args)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.requests < 4 or args.concurrency < 1:
        raise SystemExit("--requests must be at least 4 and --concurrency at least 1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        runs = make_adapters(args.base, Path(args.workdir or tmp))
        result = asyncio.run(bench(args, runs))
    mixed, single = result["mixed"], result["single"]
    ratio = mixed["requests_per_s"] / single["requests_per_s"] if single["requests_per_s"] else 0
    print(
        json.dumps(
            {
                "base": args.base,
                "adapters": len(runs),
                "requests": mixed["requests"],
                "concurrency": args.concurrency,
                "max_tokens": args.max_tokens,
                "errors": mixed["errors"] + single["errors"],
                "p50_ms": mixed["p50_ms"],
                "p95_ms": mixed["p95_ms"],
                "requests_per_s": mixed["requests_per_s"],
                "tokens_per_s": mixed["tokens_per_s"],
                "single": single,
                "mixed_over_single": round(ratio, 3),
                "goal_mixed_over_single": GOAL_RATIO,
                "batches": result["batches"],
                "mean_batch_rows": result["mean_batch_rows"],
                "threads": args.threads,
                "batch_wait_ms": args.batch_wait_ms,
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
