"""Perplexity: answer tokens over every row, whole sequences over a seeded sample."""

from __future__ import annotations

import math

import pytest

from tuneforge.config import ModelConfig
from tuneforge.eval.perplexity import perplexity, sequence_sample
from tuneforge.models.load import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Classify the message."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ]
    }
    for text, label in [
        ("I loved this film", "positive"),
        ("the food was cold and bland", "negative"),
        ("hello there", "neutral"),
        ("a long and winding road of a sentence with many words", "mixed"),
        ("good morning", "neutral"),
        ("never again", "negative"),
    ]
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tokenizer, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    return model, tokenizer


def test_sequence_sample_is_seeded_and_bounded():
    assert sequence_sample(5, None) == [0, 1, 2, 3, 4]
    assert sequence_sample(5, 9) == [0, 1, 2, 3, 4]
    picked = sequence_sample(100, 7)
    assert len(set(picked)) == 7 and picked == sorted(picked) and max(picked) < 100
    assert sequence_sample(100, 7) == picked


def test_sequence_perplexity_covers_only_the_sample(tiny):
    model, tokenizer = tiny
    every = perplexity(model, tokenizer, ROWS, batch_size=4, sequence_rows=None)
    sampled = perplexity(model, tokenizer, ROWS, batch_size=4, sequence_rows=2)
    subset = [ROWS[i] for i in sequence_sample(len(ROWS), 2)]
    alone = perplexity(model, tokenizer, subset, batch_size=4, sequence_rows=None)
    # The answer perplexity still covers every row; the sequence one exactly the sample's.
    assert sampled["answer"] == pytest.approx(every["answer"], rel=1e-5)
    assert sampled["sequence"] == pytest.approx(alone["sequence"], rel=1e-5)
    assert not math.isclose(sampled["sequence"], every["sequence"], rel_tol=1e-4)
