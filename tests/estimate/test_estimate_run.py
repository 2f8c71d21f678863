"""`estimate` end to end on the tiny model (a real probe), the GPU table, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.errors import TuneforgeError
from tuneforge.estimate.prices import load_table, select

pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_cache")

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smollm2-135m" / "lora.yaml"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    rows = []
    for i in range(20):
        word = ["apple", "oak"][i % 2]
        messages = [
            {"role": "user", "content": f"What is {word}? item {i}" + " please" * (i % 4)},
            {"role": "assistant", "content": ["fruit", "tree"][i % 2]},
        ]
        rows.append(json.dumps({"messages": messages}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "data" / "val.jsonl").write_text("\n".join(rows[:6]) + "\n")
    return tmp_path / "data"


def _cfg(tiny_model_dir, data_dir, *extra):
    from tuneforge.config import TrainConfig, resolve

    return resolve(
        TrainConfig,
        CONFIG,
        [f"model.name={tiny_model_dir}", f"data.dir={data_dir}", "train.batch_size=4", *extra],
    )


def test_estimate_scales_the_probe_to_the_dataset(tiny_model_dir, data_dir):
    from tuneforge.estimate.run import VALIDATION_COST, estimate

    result = estimate(_cfg(tiny_model_dir, data_dir), gpus=["t4", "h100"], epochs=2, log=print)
    assert set(result["methods"]) == {"lora", "full", "qlora"}
    tokens = result["tokens"]
    assert tokens["train_examples"] == 20 and tokens["val_examples"] == 6
    assert tokens["shared_prefix"] > 0  # "<|im_start|>user\nWhat is " in every row
    prefix = tokens["shared_prefix"]
    # The run's largest packed pass (20 rows, batches of 4, 2 epochs): never above 4 longest
    # rows sharing the prefix, never below the longest row alone.
    assert tokens["longest"] <= tokens["per_pass"] <= prefix + 4 * (tokens["longest"] - prefix)
    assert tokens["packed"] and "10 micro-batches" in tokens["per_pass_from"]
    t = result["time"]
    probe = t["probe"]
    assert probe["steps_timed"] == 3 and probe["examples_timed"] == 12
    assert t["examples_seen"] == 40 and t["validation_passes"] == 2
    per = probe["seconds_per_example"]
    assert probe["warmup_examples"] == 4
    assert t["train_seconds"] == pytest.approx(probe["warmup_seconds"] + per * (40 - 4))
    assert t["validation_seconds"] == pytest.approx(per * VALIDATION_COST * 6 * 2)
    assert t["total_seconds"] == pytest.approx(
        probe["load_seconds"] + t["train_seconds"] + t["validation_seconds"]
    )
    # Fit: bf16 totals of a tiny model are far below 15 GiB.
    assert result["fits"] == {g: {k: True for k in result["methods"]} for g in ("t4", "h100")}
    # FLOP-based GPU time: the faster GPU is cheaper in time; cost = time x price.
    t4, h100 = result["cost"]["t4"], result["cost"]["h100"]
    assert h100["seconds"] < t4["seconds"]
    assert t4["usd"] == pytest.approx(t4["seconds"] / 3600 * 0.50)


def test_largest_planned_pass_replays_the_runs_batches():
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.estimate.run import largest_planned_pass
    from tuneforge.train.data import TokenizedSplit, epoch_batches

    lengths = [10, 50, 12, 11, 13, 14, 90, 15]
    split = TokenizedSplit([[1] * n for n in lengths], [[1] * n for n in lengths])
    cfg = resolve(TrainConfig, overrides=["train.batch_size=2", "train.max_batch_tokens=100"])
    first_epoch = epoch_batches(lengths, 2, cfg.train.seed, 0, False)

    def packed(batch):  # prefix 4 once, then each row's own tokens; a row over budget alone
        pieces = [[i] for i in batch] if 4 + sum(lengths[i] - 4 for i in batch) > 100 else [batch]
        return max(4 + sum(lengths[i] - 4 for i in piece) for piece in pieces)

    def padded(batch):
        pieces = [[i] for i in batch] if 2 * max(lengths[i] for i in batch) > 100 else [batch]
        return max(4 + len(piece) * (max(lengths[i] for i in piece) - 4) for piece in pieces)

    for micro in (1, 2, 4):
        want = max(packed(b) for b in first_epoch[:micro])
        assert largest_planned_pass(cfg, split, 4, True, micro) == want
        want = max(padded(b) for b in first_epoch[:micro])
        assert largest_planned_pass(cfg, split, 4, False, micro) == want
    # Past one epoch, the next epoch's (reshuffled) batches count too: every row is seen.
    assert largest_planned_pass(cfg, split, 4, True, 6) >= 90


def test_estimate_without_data_uses_max_seq_len(tiny_model_dir):
    from tuneforge.config import TrainConfig, resolve
    from tuneforge.estimate.run import estimate

    cfg = resolve(TrainConfig, CONFIG, [f"model.name={tiny_model_dir}", "model.max_seq_len=64"])
    result = estimate(cfg, probe_steps=0, log=print)
    assert result["tokens"]["longest"] == 64
    assert result["tokens"]["per_pass"] == 16 * 64  # the config's batch of 16
    assert "need a dataset size" in result["time"]["note"]
    with_size = estimate(cfg, examples=100, epochs=1, probe_steps=0, log=print)
    assert with_size["time"]["examples_seen"] == 100 and "probe" not in with_size["time"]


def test_gpu_table_defaults_and_errors(tmp_path):
    table = load_table()
    assert {"t4", "a10g", "a100-40", "a100-80", "h100"} <= set(table.gpus)
    assert (table.gpus["t4"].price_per_hour, table.gpus["a100-80"].price_per_hour) == (0.5, 8.0)
    assert [g.name for g in select(table, ["H100", "t4"])] == ["h100", "t4"]
    with pytest.raises(TuneforgeError, match="--gpu v100: not in"):
        select(table, ["v100"])
    bad = tmp_path / "prices.yaml"
    bad.write_text(
        "gpus:\n  mine: {memory_gib: 24, price_per_hour: free, bf16_tflops: 1, utilization: 0.3}\n"
    )
    with pytest.raises(TuneforgeError, match=r"gpus\.mine\.price_per_hour: expected a positive"):
        load_table(bad)
    bad.write_text(
        "gpus:\n  mine: {mem: 24, price_per_hour: 1, bf16_tflops: 1, utilization: 0.3}\n"
    )
    with pytest.raises(TuneforgeError, match=r"gpus\.mine: unknown field 'mem'; the fields are"):
        load_table(bad)
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"gpus": {"l4": {"memory_gib": 22, "price_per_hour": 0.8,
                                               "bf16_tflops": 121, "utilization": 0.3}}}))  # fmt: skip
    assert list(load_table(own).gpus) == ["l4"]


def test_estimate_cli(tiny_model_dir, data_dir, tmp_path):
    runner = CliRunner()
    args = ["estimate", str(CONFIG), f"model.name={tiny_model_dir}", f"data.dir={data_dir}"]
    out = tmp_path / "estimate.json"
    result = runner.invoke(app, [*args, "--gpu", "t4", "--probe-steps", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "training memory" in result.output and "measured" in result.output
    assert json.loads(out.read_text())["gpus"]["t4"]["price_per_hour"] == 0.5
    bad = runner.invoke(app, [*args, "--gpu", "v100"])
    assert bad.exit_code == 2 and "v100" in bad.output
    bad = runner.invoke(app, [*args, "--prices", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and "no such file" in bad.output
