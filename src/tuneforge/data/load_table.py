"""Read Parquet files and `hf:` (Hugging Face `datasets`) sources into `RawRecord`s.

pyarrow and datasets are imported only inside the readers that need them: both are slow to import.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tuneforge.data.lines import file_error
from tuneforge.data.records import DataError, Location, RawRecord

_LOCAL_BUILDERS = {  # `datasets` builders for a single local data file
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


def read_parquet(path: str) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        yield from _table_rows(path, batches)
    except (pa.ArrowException, OSError) as e:
        raise file_error(
            path, f"is not a readable Parquet file ({e}); re-export it, or save it as .jsonl"
        ) from None


def _table_rows(file: str, batches: Iterable[Any]) -> Iterator[RawRecord]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist(maps_as_pydicts="lossy"):
            number += 1
            yield RawRecord(_plain(row), Location(file, number, "row"))


def _plain(value: Any) -> Any:
    """Arrow values as JSON-serialisable Python: dates as ISO text, bytes as text or base64."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)  # Decimal, timedelta: exact as text


def read_hf(spec: str) -> Iterator[RawRecord]:
    name, sep, split = spec[3:].rpartition(":")
    if not sep or not split or "/" in split:  # no split given (or a ':' inside a path)
        name, split = spec[3:], ""
    if not name:
        raise file_error(spec, "names no dataset; write hf:OWNER/NAME[:SPLIT] or hf:DIRECTORY")
    dataset = _load_hf(spec, name, split or None)
    yield from _table_rows(spec, dataset.with_format("arrow").iter(batch_size=1024))


def _load_hf(spec: str, name: str, split: str | None) -> Any:
    import datasets  # slow to import: only when asked for

    local = Path(name).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            return _pick_split(spec, datasets.load_from_disk(str(local)), split)
        if local.is_dir():
            return datasets.load_dataset(str(local), split=split or "train")
        if local.is_file():
            builder = _LOCAL_BUILDERS.get(local.suffix.lower(), "text")
            return datasets.load_dataset(builder, data_files=str(local), split=split or "train")
    except DataError:
        raise
    except Exception as e:  # the library raises many types; its message is what matters
        raise file_error(
            spec,
            f"could not be loaded from {name} ({_short(e)}); check the directory holds data files "
            f"or a save_to_disk dataset, and pick a split with hf:{name}:SPLIT",
        ) from None
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as e:
        raise file_error(
            spec,
            f"could not be loaded from the Hugging Face Hub ({_short(e)}): the hub could not be "
            "reached or has no such dataset; pass a local file or directory instead "
            "(data.jsonl, or hf:./saved_dataset)",
        ) from None


def _pick_split(spec: str, loaded: Any, split: str | None) -> Any:
    if not hasattr(loaded, "keys"):  # a single Dataset has no splits to choose from
        return loaded
    if split is None:
        split = "train" if "train" in loaded or len(loaded) != 1 else next(iter(loaded))
    if split not in loaded:
        raise file_error(
            spec, f"has no split '{split}' (it has {', '.join(loaded)}); pick one: hf:NAME:SPLIT"
        )
    return loaded[split]


def _short(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__
