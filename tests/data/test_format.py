import pytest

from tuneforge.data.format import IGNORE_INDEX, prompt_text, render, token_lengths, tokenize_example
from tuneforge.errors import TuneforgeError
from tuneforge.models.tiny import TINY_CHATML_TEMPLATE, build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tiny_tokenizer("llama")
    tok.chat_template = TINY_CHATML_TEMPLATE
    return tok


def trained_text(tokenizer, tokens):
    ids = [t for t, lab in zip(tokens.input_ids, tokens.labels, strict=True) if lab != IGNORE_INDEX]
    return tokenizer.decode(ids)


def test_only_the_answer_and_end_of_turn_carry_loss(tokenizer):
    messages = [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "my card has not arrived"},
        {"role": "assistant", "content": "card_arrival"},
    ]
    tokens = tokenize_example(tokenizer, messages)
    assert trained_text(tokenizer, tokens) == "card_arrival<|im_end|>"
    # Masked positions are exactly the prompt: the prompt's tokens come first, unlabelled.
    prompt_ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
    assert tokens.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(lab == IGNORE_INDEX for lab in tokens.labels[: len(prompt_ids)])
    trained = [lab for lab in tokens.labels if lab != IGNORE_INDEX]
    assert trained == tokens.input_ids[len(prompt_ids) : len(prompt_ids) + len(trained)]
    # After the end-of-turn marker only template whitespace remains, and it is not trained.
    tail = tokens.input_ids[len(prompt_ids) + len(trained) :]
    assert tokenizer.decode(tail).strip() == ""


def test_every_assistant_turn_is_trained(tokenizer):
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "fine"},
    ]
    rendered = render(tokenizer, messages)
    assert [rendered.text[a:b] for a, b in rendered.answer_spans] == [
        "hi there<|im_end|>",
        "fine<|im_end|>",
    ]
    tokens = tokenize_example(tokenizer, messages)
    assert trained_text(tokenizer, tokens) == "hi there<|im_end|>fine<|im_end|>"


def test_token_lengths_match_tokenization(tokenizer):
    conversations = [
        [{"role": "user", "content": "a" * n}, {"role": "assistant", "content": "b"}]
        for n in (1, 10, 50)
    ]
    lengths = token_lengths(tokenizer, conversations)
    assert lengths == [len(tokenize_example(tokenizer, c).input_ids) for c in conversations]
    assert lengths[0] < lengths[1] < lengths[2]
    assert token_lengths(tokenizer, []) == []


def test_template_without_prefix_property_is_refused():
    tok = build_tiny_tokenizer("llama")
    # Renders the assistant turn differently once the conversation continues: no prefix property.
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
        "{% if loop.last %}!{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(TuneforgeError, match="prefix"):
        render(tok, messages)
