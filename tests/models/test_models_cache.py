"""The model cache: root override, memoized hashes, atomic never-clobbering entries."""

from __future__ import annotations

import os

import pytest

from tuneforge.models import cache


def test_root_follows_env(isolated_cache, monkeypatch, tmp_path):
    assert cache.cache_root() == isolated_cache
    version = f"abc-v{cache.ENTRY_VERSION}"
    assert cache.entry_dir("abc") == isolated_cache / "models" / version
    assert cache.tokenizer_entry_dir("abc") == isolated_cache / "tokenizers" / version
    monkeypatch.delenv("TUNEFORGE_CACHE")
    assert cache.cache_root().parts[-2:] == (".cache", "tuneforge")


def test_sha256_is_memoized_and_invalidated_by_changes(tmp_path, monkeypatch):
    target = tmp_path / "weights.gguf"
    target.write_bytes(b"one")
    calls = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p: calls.append(p) or real(p))

    first = cache.file_sha256(target)
    assert cache.file_sha256(target) == first
    assert len(calls) == 1  # second call served from hashes.json

    target.write_bytes(b"two, longer")  # size (and mtime) change: re-hash
    assert cache.file_sha256(target) != first
    assert len(calls) == 2


def test_corrupt_memo_is_ignored(tmp_path, isolated_cache):
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "hashes.json").write_text("{not json")
    target = tmp_path / "f"
    target.write_bytes(b"x")
    assert len(cache.file_sha256(target)) == 64


def test_publish_is_atomic_on_failure(tmp_path):
    target = tmp_path / "entry"

    def broken(tmp):
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.publish_directory(target, broken)
    assert not target.exists()
    assert os.listdir(tmp_path) == []  # no temp directory left behind either


def test_publish_never_replaces_an_existing_entry(tmp_path):
    target = tmp_path / "entry"
    cache.publish_directory(target, lambda tmp: (tmp / "a").write_text("first"))
    # A concurrent builder of the same entry finishing later must not swap it under readers.
    cache.publish_directory(target, lambda tmp: (tmp / "a").write_text("second"))
    assert (target / "a").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["entry"]
