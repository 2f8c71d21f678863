import pytest

from tuneforge.data.convert import (
    DEFAULT_CLASSIFICATION_SYSTEM,
    Columns,
    ConvertOptions,
    bad_characters,
    detect_columns,
    to_example,
)
from tuneforge.data.records import Example, Location, Problem, RawRecord

GEN = ConvertOptions(task="generation", system=None, template="{text}")
CLS = ConvertOptions(task="classification", system=None, template="{text}")


def rec(**fields):
    return RawRecord(fields, Location("in.jsonl", 7))


@pytest.mark.parametrize(
    ("keys", "kwargs", "expected"),
    [
        (["messages"], {}, Columns("chat")),
        (["instruction", "input", "output"], {}, Columns("alpaca")),
        (["prompt", "completion"], {}, Columns("prompt_completion")),
        (["prompt", "response"], {}, Columns("prompt_completion", response="response")),
        (["text", "label"], {}, Columns("text_label")),
        (["text", "category"], {}, Columns("text_label", label="category")),
        (
            ["q", "a"],
            {"prompt_col": "q", "response_col": "a"},
            Columns("prompt_completion", prompt="q", response="a"),
        ),
        (
            ["body", "y"],
            {"text_col": "body", "label_col": "y"},
            Columns("text_label", text="body", label="y"),
        ),
    ],
)
def test_detect_columns(keys, kwargs, expected):
    assert detect_columns(keys, "auto", **kwargs) == expected


def test_detect_columns_explains_missing():
    message = detect_columns(["text", "category"], "auto", label_col="intent")
    assert (
        isinstance(message, str)
        and "--label-col 'intent'" in message
        and "text, category" in message
    )
    assert "cannot tell the format" in detect_columns(["foo"], "auto")
    assert "--format alpaca" in detect_columns(["text", "label"], "alpaca")


def test_text_label_becomes_three_turn_chat():
    example = to_example(
        rec(text="  where is  my card ", label="card_arrival"), Columns("text_label"), CLS
    )
    assert isinstance(example, Example)
    assert example.messages == [
        {"role": "system", "content": DEFAULT_CLASSIFICATION_SYSTEM},
        {"role": "user", "content": "where is my card"},
        {"role": "assistant", "content": "card_arrival"},
    ]
    assert (example.label, example.text) == ("card_arrival", "where is my card")


def test_integer_labels_and_template():
    options = ConvertOptions(task="classification", system="Sort it.", template="Ticket: {text}")
    example = to_example(rec(text="hi {x}", label=3), Columns("text_label"), options)
    assert example.messages[0]["content"] == "Sort it."
    assert example.messages[1]["content"] == "Ticket: hi {x}"
    assert example.label == "3"


def test_alpaca_joins_instruction_and_input():
    example = to_example(
        rec(instruction="Translate", input="bonjour", output="hello"), Columns("alpaca"), GEN
    )
    assert example.messages == [
        {"role": "user", "content": "Translate\n\nbonjour"},
        {"role": "assistant", "content": "hello"},
    ]
    assert example.label is None


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"text": "", "label": "a"}, "text", "is empty"),
        ({"label": "a"}, "text", "is missing"),
        ({"text": 5, "label": "a"}, "text", "must be a string, found a number"),
        ({"text": "ok", "label": None}, "label", "must be a string"),
        ({"text": "bad\x00byte", "label": "a"}, "text", "U+0000"),
        ({"text": "mojibake \ufffd", "label": "a"}, "text", "U+FFFD"),
        ({"text": "ok", "label": "two\nlines"}, "label", "single line"),
    ],
)
def test_text_label_problems_name_the_field(fields, field, words):
    problem = to_example(rec(**fields), Columns("text_label"), CLS)
    assert isinstance(problem, Problem)
    assert problem.field == field and words in problem.message
    assert str(problem).startswith("in.jsonl:7: field")


@pytest.mark.parametrize(
    ("messages", "field", "words"),
    [
        ("hello", "messages", "must be a list"),
        ([], "messages", "is empty"),
        ([{"role": "bot", "content": "x"}], "messages[0].role", "unknown role 'bot'"),
        ([{"role": "user"}], "messages[0].content", "is missing"),
        (
            [{"role": "user", "content": None}],
            "messages[0].content",
            "must be a string, found null",
        ),
        ([{"content": "hi"}], "messages[0].role", "is missing"),
        ([{"role": "user", "content": "hi"}], "messages[0]", "must end with an assistant"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
            ],
            "messages",
            "in a row",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "c"},
            ],
            "messages[1].role",
            "only come first",
        ),
        ([{"role": "assistant", "content": "a"}], "messages", "must be from the user"),
    ],
)
def test_chat_problems(messages, field, words):
    problem = to_example(rec(messages=messages), Columns("chat"), GEN)
    assert isinstance(problem, Problem), problem
    assert problem.field == field and words in problem.message


def test_chat_valid_multi_turn_with_system_option():
    options = ConvertOptions(task="generation", system="Be brief.", template="{text}")
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    example = to_example(rec(messages=messages), Columns("chat"), options)
    assert example.messages[0] == {"role": "system", "content": "Be brief."}
    assert len(example.messages) == 5 and example.answer == "d"


def test_bad_characters_allows_whitespace():
    assert bad_characters("tab\tnew\nline\r") is None
    assert "U+001B" in bad_characters("esc\x1b[0m")
    assert "byte-order mark" in bad_characters("x\ufeffy")


def test_chat_row_without_messages_names_the_fields_it_has():
    problem = to_example(rec(text="hi", label="a"), Columns("chat"), GEN)
    assert isinstance(problem, Problem) and problem.field == "messages"
    assert "is missing (fields: label, text)" in problem.message
