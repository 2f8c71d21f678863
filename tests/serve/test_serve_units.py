"""Small pieces: adapter names, stop strings while streaming, token budget, metrics text."""

from __future__ import annotations

import pytest

from tuneforge.errors import TuneforgeError
from tuneforge.serve.errors import APIError
from tuneforge.serve.jobs import SamplingParams
from tuneforge.serve.metrics import Metrics
from tuneforge.serve.prompts import token_budget
from tuneforge.serve.registry import validate_name
from tuneforge.serve.sampling import RowText, stop_holdback
from tuneforge.serve.server import parse_adapters


@pytest.mark.parametrize("name", ["support", "b77-lora", "v1.2", "ft:smol:intent", "A_b"])
def test_good_adapter_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "../x", "a/b", "a\\b", "..", "x..y", ".hidden", "-x", "a b", "__base__", "é", "x" * 65],
)
def test_bad_adapter_names(name):
    with pytest.raises(TuneforgeError, match="adapter name"):
        validate_name(name)


def test_parse_adapters():
    assert parse_adapters(["a=runs/a", "b = runs/b"]) == {"a": "runs/a", "b": "runs/b"}
    for bad in (["a"], ["=x"], ["a="], ["a=x", "a=y"]):
        with pytest.raises(TuneforgeError):
            parse_adapters(bad)


def test_stop_holdback():
    assert stop_holdback("hello wor", ["world"]) == 3
    assert stop_holdback("hello", ["xyz"]) == 0
    assert stop_holdback("ab", ["b!", "ab!"]) == 2


class _CharTokenizer:
    """Token i is chr(i): enough to drive RowText."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def feed(text: str, stops=(), max_tokens=100):
    row = RowText(_CharTokenizer(), SamplingParams(max_tokens, stop=tuple(stops)))
    deltas = []
    for ch in text:
        deltas.append(row.add(ord(ch), False))
        if row.finished:
            break
    return row, "".join(deltas)


def test_streamed_text_never_includes_a_stop_string():
    row, streamed = feed("one two STOP three", stops=["STOP"])
    assert row.text == "one two " and row.finish_reason == "stop"
    assert row.text.startswith(streamed)
    row, streamed = feed("one ST two", stops=["STOP"], max_tokens=10)
    assert row.finish_reason == "length" and row.text == "one ST two"


def test_stop_token_ends_without_text():
    row = RowText(_CharTokenizer(), SamplingParams(5))
    row.add(ord("a"), False)
    row.add(0, True)
    assert row.text == "a" and row.finish_reason == "stop" and row.generated == 2


def test_token_budget():
    assert token_budget(10, None, 100, 256, param="messages") == 90
    assert token_budget(10, 5, 100, 256, param="messages") == 5
    for prompt, asked in ((100, None), (95, 6)):
        with pytest.raises(APIError) as caught:
            token_budget(prompt, asked, 100, 256, param="messages")
        assert caught.value.code == "context_length_exceeded" and caught.value.status == 400


def test_metrics_text_format():
    metrics = Metrics()
    metrics.requests.inc(route="/v1/models", model='a"b', status="200")
    metrics.batch_rows.observe(3)
    text = metrics.render()
    assert 'tuneforge_requests_total{route="/v1/models",model="a\\"b",status="200"} 1' in text
    assert 'tuneforge_batch_rows_bucket{le="2"} 0' in text
    assert 'tuneforge_batch_rows_bucket{le="4"} 1' in text
    assert 'tuneforge_batch_rows_bucket{le="+Inf"} 1' in text
    assert "tuneforge_batch_rows_count 1" in text and "tuneforge_adapter_loads_total 0" in text
