"""Data-parallel training: 2 CPU processes (gloo) train like 1 process with the same global batch.

Two real launches of `-m tuneforge train` on the tiny model: `torchrun` for the loss-curve
equivalence, `accelerate launch` with the shipped configs/accelerate/ddp.yaml for the killed
rank. The references and the resume run in this process. What the launches cannot show cheaply
(how a window is split, RNG per rank, LR scaling, engines refused) is tested directly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tuneforge.errors import TuneforgeError
from tuneforge.train import checkpoint as ckpt
from tuneforge.train import distributed as dist
from tuneforge.train.tracking import read_metrics

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"

# No dropout: the ranks draw their own masks, so only a dropout-free run can match 1 process.
# 36 examples / batch 4 = 9 micro-batches per epoch: the last window of an epoch leaves rank 1
# without data; max_batch_tokens=60 cuts some micro-batches into pieces, unevenly across ranks.
COMMON = (
    "method.kind=lora", "method.r=4", "method.dropout=0", "train.batch_size=4", "train.lr=2e-3",
    "train.warmup_ratio=0.1", "train.scheduler=cosine", "train.max_batch_tokens=60",
    "tracking.tensorboard=false",
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_same_curve(got: list[dict], want: list[dict], rel: float = 1e-4) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want, strict=True):
        for key in ("train/loss", "train/grad_norm", "train/lr", "val/loss"):
            assert (key in a) == (key in b), (a["step"], key)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=rel), (a["step"], key)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter_model.safetensors"))


@pytest.fixture
def data_dir(tmp_path, make_task) -> Path:
    return make_task(tmp_path / "data", n_train=36, n_val=6)


def test_two_processes_match_one_process_at_the_same_global_batch(
    tmp_path, tiny_model_dir, data_dir, tuneforge_cmd, cli
):
    """torchrun: 2 ranks x batch 4 == 1 process x batch 4 x 2 accumulation, step by step."""
    args = [
        "train", tmp_path / "empty.yaml", f"model.name={tiny_model_dir}", f"data.dir={data_dir}",
        *COMMON, "train.max_steps=7",
    ]  # fmt: skip
    (tmp_path / "empty.yaml").write_text("")
    two, one = tmp_path / "two", tmp_path / "one"
    argv, env = tuneforge_cmd(*args, "-o", two)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_port", str(_free_port()), "--max-restarts", "0"]
    launched = subprocess.run(
        [*launcher, *argv[1:]], env=env, capture_output=True, text=True, timeout=240
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    reference = cli(*args, "train.grad_accum=2", "-o", one)
    assert reference.exit_code == 0, reference.output

    got, want = read_metrics(two), read_metrics(one)
    assert len(got) == 7 and any("val/loss" in r for r in got)
    _assert_same_curve(got, want)
    for name, tensor in _adapter(one).items():
        torch.testing.assert_close(_adapter(two)[name], tensor, rtol=1e-4, atol=1e-6, msg=name)

    # Reported once (by the main process), in the log and the manifest.
    out = launched.stdout
    assert out.count("global batch 8 = 4 per device x 1 accumulation x 2 process(es)") == 1
    assert out.count("trained 7 steps") == 1
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["global_batch"] == 8
    assert manifest["distributed"]["processes"] == 2
    assert manifest["distributed"]["engine"] == "MULTI_CPU"
    assert json.loads((one / "manifest.json").read_text())["global_batch"] == 8
    # Rank 1's RNG state is in each checkpoint, next to the main process's.
    last = ckpt.list_checkpoints(two)[-1]
    assert (last / "rng.pt").is_file() and (last / "rng-rank1.pt").is_file()
    state = json.loads((last / "state.json").read_text())
    assert state["world_size"] == 2 and state["global_batch"] == 8


def _rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the launched worker with RANK=rank among the processes carrying `tag`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TUNEFORGE_TEST_TAG={tag}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds ranks through /proc")
def test_killed_rank_fails_the_launch_and_the_run_resumes_on_one_process(
    tmp_path, tiny_model_dir, data_dir, tuneforge_cmd, cli
):
    """accelerate launch + ddp.yaml: SIGKILL rank 1 mid-run; the launch fails at once, the run
    directory keeps its last checkpoint, and --resume on 1 process (accumulation 2, the same
    global batch) ends where an unbroken run does."""
    (tmp_path / "empty.yaml").write_text("")
    steps = 20

    def args(run_dir: Path, *extra: str) -> list[str]:
        return [
            "train", tmp_path / "empty.yaml", f"model.name={tiny_model_dir}",
            f"data.dir={data_dir}", *COMMON, f"train.max_steps={steps}", "train.save_every=4",
            "-o", run_dir, *extra,
        ]  # fmt: skip

    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    argv, env = tuneforge_cmd(*args(killed))
    tag = uuid.uuid4().hex
    env["TUNEFORGE_TEST_TAG"] = tag
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher += ["--config_file", str(ACCELERATE_CONFIGS / "ddp.yaml"), "--num_processes", "2"]
    launcher += ["--main_process_port", str(_free_port())]
    log = (tmp_path / "launch.log").open("w")
    launch = subprocess.Popen([*launcher, *argv[1:]], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        victim = None
        while time.monotonic() < deadline and launch.poll() is None:
            records = read_metrics(killed) if (killed / "metrics.jsonl").is_file() else []
            if ckpt.list_checkpoints(killed) and records and records[-1]["step"] >= 6:
                victim = _rank_pid(tag, 1)
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                    break
            time.sleep(0.005)
        assert victim is not None, "the run ended (or never started) before rank 1 was killed"
        killed_at = time.monotonic()
        code = launch.wait(timeout=60)
        failed_within = time.monotonic() - killed_at
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
        log.close()
    output = (tmp_path / "launch.log").read_text()
    assert code != 0, output
    assert failed_within < 30, f"the launch took {failed_within:.1f} s to fail"
    assert not (killed / "manifest.json").exists()
    assert _rank_pid(tag, 0) is None, "rank 0 outlived the failed launch"
    reached = read_metrics(killed)[-1]["step"]
    last = ckpt.list_checkpoints(killed)[-1]
    assert 4 <= int(last.name.removeprefix(ckpt.PREFIX)) <= reached < steps

    # On 1 process the same global batch needs accumulation 2; anything else is refused before
    # the run directory is touched.
    config_before = (killed / "config.yaml").read_text()
    refused = cli(*args(killed, "--resume"))
    assert refused.exit_code == 2, refused.output
    assert "global batch was 8" in refused.output and "train.grad_accum=2" in refused.output
    assert (killed / "config.yaml").read_text() == config_before

    resumed = cli(*args(killed, "train.grad_accum=2", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    reference = cli(*args(unbroken, "train.grad_accum=2"))
    assert reference.exit_code == 0, reference.output
    _assert_same_curve(read_metrics(killed), read_metrics(unbroken))
    for name, tensor in _adapter(unbroken).items():
        torch.testing.assert_close(_adapter(killed)[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------------
# the pieces, in-process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("max_tokens", [None, 40])
def test_rank_passes_split_the_window_disjointly_with_equal_pass_counts(world, max_tokens):
    lengths = [5, 17, 9, 30, 12, 8, 21, 3, 14, 11]
    window = [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]  # the last window of an epoch: 4 batches
    plans = [dist.rank_passes(window, r, world, lengths, max_tokens) for r in range(world)]
    assert len({len(plan) for plan in plans}) == 1  # every rank runs as many passes
    counted = [i for plan in plans for indices, counts in plan if counts for i in indices]
    assert sorted(counted) == list(range(10))  # each example once, on one rank
    for plan in plans:
        for indices, counts in plan:
            if not counts:  # filler: the window's shortest example, alone
                assert indices == [7]
            elif max_tokens is not None and len(indices) > 1:
                assert len(indices) * max(lengths[i] for i in indices) <= max_tokens
    if world == 1:
        assert all(counts for _, counts in plans[0])
    if world == 3:  # 4 batches over 3 ranks: some rank runs fewer real passes, and pads
        assert any(not counts for plan in plans for _, counts in plan)


def test_lr_scaling_is_explicit(make_cfg):
    from tuneforge.errors import ConfigError

    cfg = make_cfg("train.batch_size=4", "train.grad_accum=2", "train.lr=1e-3")
    assert dist.global_batch(cfg, 4) == 32
    assert dist.effective_lr(cfg, 4) == 1e-3  # none: the number of processes changes nothing
    linear = make_cfg(
        "train.batch_size=4", "train.grad_accum=2", "train.lr=1e-3",
        "train.lr_scaling=linear", "train.lr_reference_batch=8",
    )  # fmt: skip
    assert dist.effective_lr(linear, 1) == pytest.approx(1e-3)
    assert dist.effective_lr(linear, 4) == pytest.approx(4e-3)
    root = linear.model_copy(
        update={"train": linear.train.model_copy(update={"lr_scaling": "sqrt"})}
    )
    assert dist.effective_lr(root, 4) == pytest.approx(2e-3)
    with pytest.raises(ConfigError, match="lr_reference_batch"):
        make_cfg("train.lr_scaling=sqrt")


def test_linear_lr_scaling_reaches_the_optimizer_and_the_manifest(make_cfg, tmp_path):
    from tuneforge.train.run import train

    cfg = make_cfg(
        "train.max_steps=1", "train.lr=1e-3", "train.batch_size=4", "train.scheduler=constant",
        "train.lr_scaling=linear", "train.lr_reference_batch=2",
    )  # fmt: skip
    lines: list[str] = []
    train(cfg, tmp_path / "run", log=lines.append)
    assert "global batch 4 = 4 per device x 1 accumulation x 1 process(es); lr 0.002" in "\n".join(
        lines
    )
    assert read_metrics(tmp_path / "run")[0]["train/lr"] == pytest.approx(2e-3)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["distributed"]
    assert manifest["effective_lr"] == pytest.approx(2e-3) and manifest["lr_scaling"] == "linear"


def test_checkpoint_keeps_each_ranks_rng_and_seeds_new_ranks_apart(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    torch.manual_seed(11)
    rank1 = ckpt._rng_state()
    torch.manual_seed(22)
    state = ckpt.TrainState(step=5, world_size=2, global_batch=8)
    path = ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, state, 2, [rank1])

    draws = {}
    for rank in (0, 1, 2, 3):
        torch.manual_seed(99)  # whatever the process held before
        loaded = ckpt.load_checkpoint(path, model, optimizer, scheduler, rank=rank, seed=0)
        assert (loaded.world_size, loaded.global_batch) == (2, 8)
        draws[rank] = torch.rand(4)
    torch.manual_seed(22)
    assert torch.equal(draws[0], torch.rand(4))
    torch.manual_seed(11)
    assert torch.equal(draws[1], torch.rand(4))
    # Ranks the saved run did not have: fresh, distinct streams, not a copy of rank 0's.
    assert not torch.equal(draws[2], draws[3]) and not torch.equal(draws[2], draws[0])


def test_sharded_engines_are_refused_with_the_way_out():
    for engine in ("FSDP", "DEEPSPEED"):
        fake = SimpleNamespace(distributed_type=f"DistributedType.{engine}", num_processes=2)
        with pytest.raises(TuneforgeError, match=r"ddp\.yaml"):
            dist.check_supported_engine(fake)
    dist.check_supported_engine(
        SimpleNamespace(distributed_type="DistributedType.MULTI_GPU", num_processes=2)
    )


@pytest.mark.parametrize(
    ("name", "kind", "extra"),
    [
        ("ddp", "MULTI_GPU", {}),
        ("fsdp", "FSDP", {"fsdp_version": 2}),
        ("deepspeed_zero2", "DEEPSPEED", {"zero_stage": 2}),
        ("deepspeed_zero3", "DEEPSPEED", {"zero_stage": 3}),
    ],
)
def test_shipped_accelerate_configs_load(name, kind, extra):
    """accelerate's own loader reads each file (it rejects unknown keys)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_CONFIGS / f"{name}.yaml"))
    assert str(config.distributed_type).endswith(kind)
    assert config.num_machines == 1 and config.num_processes >= 2
    section = config.fsdp_config if kind == "FSDP" else config.deepspeed_config
    assert extra.items() <= (section or {}).items()
    if kind == "DEEPSPEED":  # tuneforge accumulates itself; DeepSpeed must not do it again
        assert config.deepspeed_config["gradient_accumulation_steps"] == 1
