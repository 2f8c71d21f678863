"""The on-disk model cache: `<root>/models/<sha256-of-source-file>-v<N>/`, published atomically.

Root: `$TUNEFORGE_CACHE` if set, else `~/.cache/tuneforge`. An entry is a plain HF model
directory (config.json, model.safetensors, tokenizer files), so reading it back is an ordinary
`from_pretrained(entry)`. Entries are keyed by the content hash of the source file, so a renamed
or moved GGUF still hits, and an edited one misses. `<root>/tokenizers/<sha256>-v<N>/` holds just
the tokenizer of a GGUF whose weights have not been converted yet. N is `ENTRY_VERSION`: entries
of an older version are never read (delete them at will).

Hashing a ~100 MB GGUF costs ~0.3 s, so hashes are memoized in `<root>/hashes.json`, keyed by
(path, size, mtime): any change to the file invalidates its memo.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tuneforge.fsutil import atomic_write_text, sha256_file

_HASH_MEMO = "hashes.json"
_MEMO_LIMIT = 256  # entries kept; the memo is a convenience, not a registry
# Raised when entries written before are wrong. 2: transformers <= 5.17 converted a GGUF's
# SentencePiece vocabulary (Gemma 3) into a tokenizer that splits words into pieces the model
# never saw ("track" -> "tr", "ack"); entries written by it must not be reused.
ENTRY_VERSION = 2


def cache_root() -> Path:
    env = os.environ.get("TUNEFORGE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuneforge"


def models_dir() -> Path:
    return cache_root() / "models"


def entry_dir(sha256: str) -> Path:
    return models_dir() / f"{sha256}-v{ENTRY_VERSION}"


def tokenizer_entry_dir(sha256: str) -> Path:
    """A tokenizer-only entry, so `prepare` stays fast before any model was ever converted."""
    return cache_root() / "tokenizers" / f"{sha256}-v{ENTRY_VERSION}"


def _read_memo(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or corrupt: start again, it only costs a re-hash
    return data if isinstance(data, dict) else {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoized by (resolved path, size, mtime_ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_path = cache_root() / _HASH_MEMO
    memo = _read_memo(memo_path)
    key = str(path)
    hit = memo.get(key)
    if (
        isinstance(hit, dict)
        and hit.get("size") == stat.st_size
        and hit.get("mtime_ns") == stat.st_mtime_ns
    ):
        return str(hit["sha256"])
    digest = sha256_file(path)
    memo.pop(key, None)
    memo[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    while len(memo) > _MEMO_LIMIT:
        memo.pop(next(iter(memo)))  # dicts keep insertion order: drop the oldest
    # Best effort: a read-only cache must not stop a load, it just means hashing again next time.
    with contextlib.suppress(OSError):
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo, indent=1))
    return digest


def publish_directory(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a temp dir beside `target`, then rename it to `target` atomically.

    Unlike `fsutil.atomic_directory` this never replaces an existing `target`: if another process
    published the same entry meanwhile (same hash, same content), ours is discarded and theirs
    kept, so a reader of the entry never sees it swapped or deleted under it. A failure or Ctrl-C
    in `build` leaves no partial entry behind, so "the directory exists" means "it is complete".
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, target)  # fails (ENOTEMPTY/EEXIST) if target exists: never clobbers
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    return target
