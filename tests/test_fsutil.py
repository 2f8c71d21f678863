"""fsutil.check_output_dir: an output directory that cannot or must not be written is refused
before any work, and atomic writes to an unwritable place fail as a user error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import TuneforgeError
from tuneforge.fsutil import atomic_directory, atomic_write_text, check_output_dir


def refused(target, **kwargs) -> str:
    with pytest.raises(TuneforgeError) as caught:
        check_output_dir(target, **kwargs)
    return str(caught.value)


def test_new_directory_is_accepted_and_nothing_is_created(tmp_path):
    check_output_dir(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []  # the writability probe is removed


def test_existing_directory_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    assert "--force" in refused(tmp_path / "out")
    check_output_dir(tmp_path / "out", overwrite=True)


def test_a_file_is_not_an_output_directory(tmp_path):
    (tmp_path / "out").write_text("x")
    assert "not a directory" in refused(tmp_path / "out", overwrite=True)
    assert "is a file" in refused(tmp_path / "out" / "sub")


@pytest.mark.parametrize("input_at", ["out/data.csv", "out/deep/data.csv", "out"])
def test_an_output_holding_an_input_is_refused_even_with_force(tmp_path, input_at):
    source = tmp_path / input_at
    source.parent.mkdir(parents=True, exist_ok=True)
    if input_at == "out":
        source.mkdir()  # a directory input (train's data.dir) as the output itself
    else:
        source.write_text("text,label\n")
    message = refused(tmp_path / "out", overwrite=True, inputs=[source])
    assert "holds the input" in message and str(source) in message
    assert source.exists()


def test_an_input_beside_the_output_is_fine(tmp_path):
    (tmp_path / "out").mkdir()
    check_output_dir(tmp_path / "out", overwrite=True, inputs=[tmp_path / "data.csv"])


def test_the_current_directory_and_those_above_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for target in (".", "..", str(work)):
        assert "current directory" in refused(target, overwrite=True)


def test_an_unwritable_place_is_refused():
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    assert "cannot be created" in refused("/proc/tuneforge-out")


def test_atomic_directory_checks_before_creating_anything(tmp_path):
    source = tmp_path / "out" / "data.csv"
    source.parent.mkdir()
    source.write_text("kept")
    with (
        pytest.raises(TuneforgeError),
        atomic_directory(tmp_path / "out", overwrite=True, inputs=[source]),
    ):
        pytest.fail("the block must not run")
    assert source.read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_to_an_unwritable_place_is_a_user_error(tmp_path):
    with pytest.raises(TuneforgeError, match="cannot be written"):
        atomic_write_text(tmp_path / "missing" / "x.json", "{}")
