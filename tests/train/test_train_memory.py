"""The glibc heap setting `train` applies so freed activations leave the process."""

from __future__ import annotations

import platform
import sys

import pytest

from tuneforge.config import TrainConfig
from tuneforge.train.run import return_freed_memory_to_os


def test_off_by_default_it_costs_speed():
    assert TrainConfig().train.return_freed_memory is False


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_mallopt_is_accepted_on_glibc():
    assert return_freed_memory_to_os() is True


def test_other_platforms_are_a_no_op(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert return_freed_memory_to_os() is False
