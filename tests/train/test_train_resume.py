"""Checkpoints and resume: a run killed anywhere and resumed ends exactly where an unbroken one does.

One real `SIGKILL` of `python -m tuneforge train` (the kill a user or a scheduler does); the
other interruption points (mid accumulation window, mid checkpoint write) are injected in-process,
which is what a kill does to the on-disk state, at a fraction of the cost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from tuneforge.train import checkpoint as ckpt
from tuneforge.train import loop
from tuneforge.train.run import train
from tuneforge.train.tracking import read_metrics

# LoRA with dropout (so the RNG state must be restored) and a 2-micro-batch accumulation window.
RESUME_OVERRIDES = (
    "method.kind=lora",
    "method.r=4",
    "method.dropout=0.1",
    "train.batch_size=4",
    "train.grad_accum=2",
    "train.lr=1e-2",
    "train.warmup_ratio=0.1",
    "train.scheduler=cosine",
)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter_model.safetensors"))


def _trainable(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "trainable.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)


def _assert_same_run(resumed: Path, unbroken: Path) -> None:
    """Same metrics step by step (each step logged once), same final loss, same weights."""
    got, want = read_metrics(resumed), read_metrics(unbroken)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert got[-1]["train/loss"] == pytest.approx(want[-1]["train/loss"], abs=1e-5)
    for a, b in zip(got, want, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-5), a["step"]
        assert ("val/loss" in a) == ("val/loss" in b)
    _assert_same_weights(_adapter(resumed), _adapter(unbroken))
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["result"]["steps"] == want[-1]["step"]


# --------------------------------------------------------------------------------------------
# a real SIGKILL, through the CLI
# --------------------------------------------------------------------------------------------


def test_sigkill_mid_run_then_resume_matches_unbroken_run(
    tmp_path, tiny_model_dir, make_task, tuneforge_cmd, cli
):
    """`python -m tuneforge train` SIGKILLed mid-run, then `--resume`d, equals an unbroken run.

    Only the killed run needs its own process; the unbroken run (started while the killed one
    is still importing) and the resume run the same command in-process, through the CLI.
    """
    data = make_task(tmp_path / "data", n_train=96)  # 12 optimizer steps per epoch
    config = tmp_path / "resume.yaml"
    config.write_text(
        "method: {kind: lora, r: 4, dropout: 0.1}\n"
        "train: {batch_size: 4, grad_accum: 2, lr: 1.0e-2, warmup_ratio: 0.1, keep_last: 2}\n"
        "tracking: {tensorboard: false}\n"
    )
    steps, save_every = 60, 10

    def args(run_dir: Path, *extra: str) -> list[str]:
        return [
            "train", str(config), f"data.dir={data}", f"model.name={tiny_model_dir}",
            f"train.max_steps={steps}", f"train.save_every={save_every}", "-o", str(run_dir),
            *extra,
        ]  # fmt: skip

    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    argv, env = tuneforge_cmd(*args(killed))
    log = (tmp_path / "killed.log").open("wb")
    victim = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    outcome: dict[str, object] = {}

    def kill_once_past_a_checkpoint() -> None:
        """SIGKILL once a checkpoint exists and the run has gone past it, well before the end."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and victim.poll() is None:
            records = read_metrics(killed) if (killed / "metrics.jsonl").is_file() else []
            if ckpt.list_checkpoints(killed) and records and records[-1]["step"] >= 15:
                victim.send_signal(signal.SIGKILL)
                outcome["killed"] = True
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_once_past_a_checkpoint, daemon=True)
    watcher.start()
    try:
        reference = cli(*args(unbroken))  # meanwhile, in this process
        assert reference.exit_code == 0, reference.output
        watcher.join(timeout=150)
        assert outcome.get("killed"), "the run ended (or never started) before it could be killed"
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        log.close()

    killed_at = read_metrics(killed)[-1]["step"]
    assert 15 <= killed_at < steps
    assert not (killed / "manifest.json").exists()  # it really died mid-run
    last_checkpoint = ckpt.list_checkpoints(killed)[-1]
    # A checkpoint the kill interrupted mid-write: a temp dir with some of its files.
    leftover = ckpt.checkpoint_dir(killed) / ".tmp-step-00000099"
    leftover.mkdir()
    (leftover / "trainable.safetensors").write_bytes(b"\x00partial")

    resumed = cli(*args(killed, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming from {last_checkpoint}" in resumed.output.replace("\n", "")
    _assert_same_run(killed, unbroken)
    assert not list(ckpt.checkpoint_dir(killed).glob(".tmp-*"))  # ignored, then swept
    assert len(ckpt.list_checkpoints(killed)) <= 3  # keep_last=2, plus the best


# --------------------------------------------------------------------------------------------
# interruptions at other points, in-process
# --------------------------------------------------------------------------------------------


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not an Exception, so nothing catches it)."""


STEPS = 22  # 32 examples / (4 x 2) = 4 optimizer steps per epoch; save_every=5


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory, tiny_model_dir, task_dir) -> Path:
    """The reference: the same run as the interrupted ones, never interrupted."""
    from tuneforge.config import TrainConfig, resolve

    run_dir = tmp_path_factory.mktemp("unbroken") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            cfg = resolve(
                TrainConfig,
                None,
                [
                    f"model.name={tiny_model_dir}",
                    f"data.dir={task_dir}",
                    "tracking.tensorboard=false",
                    *RESUME_OVERRIDES,
                    f"train.max_steps={STEPS}",
                    "train.save_every=5",
                ],
            )
            train(cfg, run_dir, log=lambda s: None)
        finally:
            torch.set_num_threads(threads)
    return run_dir


@pytest.fixture
def resume_cfg(make_cfg):
    return make_cfg(*RESUME_OVERRIDES, f"train.max_steps={STEPS}", "train.save_every=5")


def _kill_after_step(step: int):
    def on_step(record):
        if record["step"] == step:
            raise _Killed

    return on_step


@pytest.mark.parametrize("kill_step", [1, 6, 13, 21])
def test_killed_after_a_step_resumes_exactly(kill_step, resume_cfg, unbroken_run, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(_Killed):
        train(resume_cfg, run_dir, log=lambda s: None, on_step=_kill_after_step(kill_step))
    if not ckpt.list_checkpoints(run_dir):  # killed before the first checkpoint
        from tuneforge.errors import TuneforgeError

        with pytest.raises(TuneforgeError, match="no checkpoint to resume from"):
            train(resume_cfg, run_dir, resume=True, log=lambda s: None)
        return
    train(resume_cfg, run_dir, resume=True, log=lambda s: None)
    _assert_same_run(run_dir, unbroken_run)


def test_killed_between_micro_batches_resumes_exactly(
    resume_cfg, unbroken_run, tmp_path, monkeypatch
):
    """Killed after the first micro-batch's backward of step 11, before the optimizer step."""
    real_answer_loss = loop.answer_loss
    armed = {"micro": 0}

    def answer_loss(model, *args, **kwargs):
        if model.training and armed["micro"]:
            armed["micro"] += 1
            if armed["micro"] == 3:  # the second micro-batch of the step after the armed one
                raise _Killed
        return real_answer_loss(model, *args, **kwargs)

    def on_step(record):
        if record["step"] == 10:
            armed["micro"] = 1

    monkeypatch.setattr(loop, "answer_loss", answer_loss)
    run_dir = tmp_path / "run"
    with pytest.raises(_Killed):
        train(resume_cfg, run_dir, log=lambda s: None, on_step=on_step)
    assert read_metrics(run_dir)[-1]["step"] == 10
    monkeypatch.setattr(loop, "answer_loss", real_answer_loss)
    train(resume_cfg, run_dir, resume=True, log=lambda s: None)
    _assert_same_run(run_dir, unbroken_run)


def test_killed_mid_checkpoint_write_leaves_temp_dir_that_resume_ignores_and_sweeps(
    resume_cfg, unbroken_run, tmp_path, monkeypatch
):
    real_rng_state = ckpt._rng_state
    saves = {"n": 0}

    def rng_state():
        saves["n"] += 1
        if saves["n"] == 4:  # the 4th checkpoint: step 10 (epoch ends 4, 8; save_every 5, 10)
            raise _Killed
        return real_rng_state()

    monkeypatch.setattr(ckpt, "_rng_state", rng_state)
    run_dir = tmp_path / "run"
    with pytest.raises(_Killed):
        train(resume_cfg, run_dir, log=lambda s: None)
    root = ckpt.checkpoint_dir(run_dir)
    partial = root / ".tmp-step-00000010"
    assert (partial / "trainable.safetensors").is_file() and not (partial / "state.json").exists()
    listed = [p.name for p in ckpt.list_checkpoints(run_dir)]
    assert listed[-1] == "step-00000008"  # the interrupted one is not a checkpoint

    monkeypatch.setattr(ckpt, "_rng_state", real_rng_state)
    train(resume_cfg, run_dir, resume=True, log=lambda s: None)
    _assert_same_run(run_dir, unbroken_run)
    assert not list(root.glob(".tmp-*"))


# --------------------------------------------------------------------------------------------
# retention, config changes on resume, extending a run
# --------------------------------------------------------------------------------------------


def test_keeps_last_n_checkpoints_and_the_best(make_cfg, tmp_path):
    # A high LoRA learning rate makes val loss bounce, so the best step is not among the last.
    cfg = make_cfg(
        "method.kind=lora",
        "method.dropout=0",
        "train.lr=3e-2",
        "train.batch_size=8",
        "train.max_steps=16",
        "train.eval_every=1",
        "train.save_every=1",
        "train.keep_last=2",
        "data.group_by_length=true",  # the batch order this scenario was built on
    )
    run_dir = tmp_path / "run"
    (ckpt.checkpoint_dir(run_dir)).mkdir(parents=True)
    result = train(cfg, run_dir, log=lambda s: None, force=True)
    val = {r["step"]: r["val/loss"] for r in read_metrics(run_dir)}
    best = min(val, key=val.get)
    assert result.best_step == best and best < 15, "pick a setting where val loss gets worse"
    kept = [p.name for p in ckpt.list_checkpoints(run_dir)]
    assert kept == [f"step-{best:08d}", "step-00000015", "step-00000016"]
    assert sorted(p.name for p in ckpt.checkpoint_dir(run_dir).iterdir()) == kept
    # The run ends with the best weights (restored from their checkpoint), not the last ones.
    from peft import PeftModel

    from tuneforge.models.load import load_model

    base, _, _ = load_model(cfg.model)
    model = PeftModel.from_pretrained(base, run_dir)
    best_weights = _trainable(ckpt.checkpoint_dir(run_dir) / f"step-{best:08d}")
    last_weights = _trainable(ckpt.checkpoint_dir(run_dir) / "step-00000016")
    saved = {name: p.detach() for name, p in model.named_parameters() if name in best_weights}
    _assert_same_weights(saved, best_weights)
    assert any(not torch.equal(saved[n], last_weights[n]) for n in saved)


def test_prune_keeps_last_and_best_and_drops_temp_dirs(tmp_path):
    root = ckpt.checkpoint_dir(tmp_path)
    for step in (1, 2, 3, 4, 5):
        (root / f"step-{step:08d}").mkdir(parents=True)
        (root / f"step-{step:08d}" / "state.json").write_text("{}")
    (root / ".tmp-step-00000006").mkdir()
    (root / "step-00000007").mkdir()  # no state.json: not a complete checkpoint, never listed
    ckpt.prune(tmp_path, keep_last=2, best_step=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step-00000002",
        "step-00000004",
        "step-00000005",
    ]
    assert not (root / ".tmp-step-00000006").exists()


def test_resume_with_changed_config_fails_naming_the_key(make_cfg, cli, tmp_path):
    cfg = make_cfg("train.max_steps=3", "train.lr=1e-2")
    run_dir = tmp_path / "run"
    train(cfg, run_dir, log=lambda s: None)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    config = run_dir / "config.yaml"

    result = cli("train", config, "train.lr=0.5", "-o", run_dir, "--resume")
    assert result.exit_code == 2, result.output
    message = result.output
    assert "train.lr" in message and "0.01 -> 0.5" in message
    assert message.count("error:") == 1 and "Traceback" not in message
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before

    # tracking, epochs and max_steps may change on resume; anything else may not.
    result = cli("train", config, "method.r=8", "-o", run_dir, "--resume")
    assert result.exit_code == 2 and "method.r" in result.output


def test_resume_with_raised_max_steps_continues_training(make_cfg, cli, tmp_path):
    common = ("method.dropout=0", "train.lr=1e-2", "train.scheduler=constant")
    run_dir = tmp_path / "run"
    train(make_cfg(*common, "train.max_steps=6"), run_dir, log=lambda s: None)
    assert read_metrics(run_dir)[-1]["step"] == 6

    result = cli("train", run_dir / "config.yaml", "train.max_steps=10", "-o", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, 11))
    assert json.loads((run_dir / "manifest.json").read_text())["result"]["steps"] == 10

    # With a constant schedule, 6 + 4 steps are exactly 10 unbroken steps.
    reference = tmp_path / "reference"
    train(make_cfg(*common, "train.max_steps=10"), reference, log=lambda s: None)
    got, want = read_metrics(run_dir), read_metrics(reference)
    for a, b in zip(got, want, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-5)
    _assert_same_weights(
        _trainable(ckpt.checkpoint_dir(run_dir) / "step-00000010"),
        _trainable(ckpt.checkpoint_dir(reference) / "step-00000010"),
    )


def test_resume_of_a_finished_run_is_a_no_op(make_cfg, cli, tmp_path):
    """A kill after the last checkpoint (while saving the final model) must still resume."""
    run_dir = tmp_path / "run"
    train(make_cfg("train.max_steps=4", "train.lr=1e-2"), run_dir, log=lambda s: None)
    adapter = _adapter(run_dir)
    metrics = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "manifest.json").unlink()  # as if killed before it was written

    result = cli("train", run_dir / "config.yaml", "-o", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    _assert_same_weights(_adapter(run_dir), adapter)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["result"]["steps"] == 4
    assert manifest["result"]["final_train_loss"] == pytest.approx(
        json.loads(metrics.splitlines()[-1])["train/loss"]
    )


def test_existing_run_is_not_clobbered_without_resume_or_force(make_cfg, cli, tmp_path):
    run_dir = tmp_path / "run"
    train(make_cfg("train.max_steps=2"), run_dir, log=lambda s: None)
    result = cli("train", run_dir / "config.yaml", "-o", run_dir)
    assert result.exit_code == 2 and "--resume" in result.output and "--force" in result.output
    assert os.listdir(ckpt.checkpoint_dir(run_dir))


def test_relative_data_dir_is_saved_absolute_and_resumes(make_cfg, task_dir, tmp_path, monkeypatch):
    """eval and export read the run's data.dir from wherever they start; a resume given the
    same relative path (from the same directory) still matches the saved config."""
    import shutil

    from tuneforge.config import TrainConfig, resolve

    shutil.copytree(task_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg("data.dir=data", "train.max_steps=2", "train.save_every=1")
    train(cfg, "run", log=lambda s: None)
    saved = resolve(TrainConfig, tmp_path / "run" / "config.yaml")
    assert saved.data.dir == str(tmp_path / "data")
    more = make_cfg("data.dir=data", "train.max_steps=3", "train.save_every=1")
    assert train(more, "run", resume=True, log=lambda s: None).steps == 3
