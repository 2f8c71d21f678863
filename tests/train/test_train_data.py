"""tuneforge.train.data: deterministic epochs, length grouping, the tokenization cache,
truncation that keeps the answer, and the loop drawing a new order every epoch."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from tuneforge.data.format import IGNORE_INDEX
from tuneforge.errors import TuneforgeError
from tuneforge.train import data as train_data
from tuneforge.train.data import (
    TokenizedSplit,
    collate,
    epoch_batches,
    load_tokenized,
    read_split,
    tokenize_rows,
)


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5, 300) for _ in range(n)]


def _padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from tuneforge.models.load import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize(("n", "batch_size"), [(1, 4), (37, 8), (1000, 8), (600, 1)])
def test_epoch_batches_cover_every_index_once_and_are_deterministic(n, batch_size, group):
    lengths = _lengths(n)
    batches = epoch_batches(lengths, batch_size, seed=3, epoch=2, group_by_length=group)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))  # every index exactly once
    assert all(1 <= len(b) <= batch_size for b in batches)
    if not group:
        assert len(batches) == -(-n // batch_size)
    assert epoch_batches(lengths, batch_size, 3, 2, group) == batches  # same (seed, epoch)
    if n > batch_size:
        assert epoch_batches(lengths, batch_size, 3, 3, group) != batches  # another epoch
        assert epoch_batches(lengths, batch_size, 4, 2, group) != batches  # another seed


def test_length_grouping_cuts_padding_but_keeps_batch_order_random():
    lengths = _lengths(2000)
    grouped = epoch_batches(lengths, 8, 0, 0, group_by_length=True)
    shuffled = epoch_batches(lengths, 8, 0, 0, group_by_length=False)
    assert _padding(grouped, lengths) < 0.2 * _padding(shuffled, lengths)
    longest = [max(lengths[i] for i in b) for b in grouped]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)


def test_collate_right_pads_and_masks():
    split = TokenizedSplit(input_ids=[[5, 6, 7], [8]], labels=[[IGNORE_INDEX, 6, 7], [8]])
    batch = collate(split, [0, 1], pad_id=99)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 99, 99]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


def test_load_tokenized_cache_hit_returns_identical_data(
    tokenizer, task_dir, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    path = task_dir / "train.jsonl"
    first = load_tokenized(path, tokenizer, 512, cache)
    files = list(cache.glob("*.pt"))
    assert len(first) == 32 and len(files) == 1

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again instead of reading the cache")

    monkeypatch.setattr(train_data, "tokenize_rows", no_tokenizing)
    again = load_tokenized(path, tokenizer, 512, cache)
    assert again == first  # a dataclass: ids, labels and counters all equal
    monkeypatch.undo()

    # Another max_seq_len or other file contents is another cache entry.
    load_tokenized(path, tokenizer, 16, cache)
    edited = tmp_path / "train.jsonl"
    edited.write_text(path.read_text().replace("fruit", "berry"))
    changed = load_tokenized(edited, tokenizer, 512, cache)
    assert changed != first
    assert len(list(cache.glob("*.pt"))) == 3
    assert not list(cache.glob("*.tmp"))


def test_truncation_keeps_the_answer_and_cuts_the_prompt_start(tokenizer):
    answer = "the answer is forty two"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "please read this long question " * 40},
                {"role": "assistant", "content": answer},
            ]
        },
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
    ]
    full = tokenize_rows(rows, tokenizer, 10_000)
    cut = tokenize_rows(rows, tokenizer, 48)
    assert len(full.input_ids[0]) > 200 and full.truncated == 0
    assert cut.truncated == 1 and cut.dropped == 0 and len(cut) == 2
    assert cut.input_ids[0] == full.input_ids[0][-48:]  # the end is kept
    assert cut.labels[0] == full.labels[0][-48:]
    answer_tokens = [t for t in cut.labels[0] if t != IGNORE_INDEX]
    assert answer in tokenizer.decode(answer_tokens)
    assert cut.input_ids[1] == full.input_ids[1]  # short examples untouched

    # Nothing left to learn from (max_seq_len too small for any label after the first token).
    tiny = tokenize_rows(rows, tokenizer, 1)
    assert tiny.dropped == 2 and len(tiny) == 0


def test_read_split_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    answer = {"role": "assistant", "content": "b"}
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, answer]})
    path.write_text(good + '\n\n{"text": "no messages"}\n')
    with pytest.raises(TuneforgeError, match=r"train\.jsonl:3: expected an object with 'messages'"):
        read_split(path)
    for line, phrase in [
        ('{"messages": []}', "must end with the assistant's answer"),
        (json.dumps({"messages": [answer]}), "after at least one user turn"),
        ('{"messages": [{"role": "user"}]}', "a role (system, user or assistant) and string"),
        ('{"messages": ["hi"]}', "a role (system, user or assistant) and string"),
    ]:
        path.write_text(good + "\n" + line + "\n")
        with pytest.raises(TuneforgeError, match=r"train\.jsonl:2: ") as info:
            read_split(path)
        assert phrase in str(info.value)
    path.write_bytes(good.encode() + b"\n\xff\xfe\n")
    with pytest.raises(TuneforgeError, match="not UTF-8"):
        read_split(path)


def test_loop_draws_a_new_order_each_epoch_and_sees_every_example(make_cfg, tmp_path, monkeypatch):
    """Every epoch is a fresh seeded permutation covering each example once (a resumed run
    recomputes the epoch's batches from (seed, epoch), so an unbroken run must do the same)."""
    from tuneforge.train.data import Batching
    from tuneforge.train.run import train

    seen: list[list[int]] = []
    real_collate = Batching.collate

    def spy(self, split, indices):
        if len(split) == 32:  # the train split (val has 8)
            seen.append(list(indices))
        return real_collate(self, split, indices)

    monkeypatch.setattr(Batching, "collate", spy)
    cfg = make_cfg("train.batch_size=8", "train.max_steps=12", "data.group_by_length=false")
    train(cfg, tmp_path / "run", log=lambda s: None)
    assert len(seen) == 12
    epochs = [list(itertools.chain(*seen[k : k + 4])) for k in (0, 4, 8)]
    for number, order in enumerate(epochs):
        assert sorted(order) == list(range(32))
        expected = list(itertools.chain(*epoch_batches([1] * 32, 8, cfg.train.seed, number, False)))
        assert order == expected
    assert epochs[0] != epochs[1] != epochs[2]
