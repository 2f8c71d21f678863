"""Pad token, chat template precedence, the fallback templates' prefix property, save/load."""

from __future__ import annotations

import itertools

import pytest

from tuneforge.errors import TuneforgeError
from tuneforge.models.tokenizer import (
    GEMMA_FALLBACK_TEMPLATE,
    chatml_fallback_template,
    ensure_pad_token,
    load_saved_tokenizer,
    prepare_tokenizer,
    render,
    save_tokenizer,
    stop_token_ids,
    template_prefix_problem,
)


def _conversations():
    """Varied shapes: with/without system, multi-turn, empty and awkward content."""
    contents = ["Hi", "", "line one\nline two", "{{ not jinja }}", "emoji 🙂 and <b>tags</b>"]
    for system, turns, content in itertools.product([None, "Be brief."], [1, 2, 3], contents):
        messages = [{"role": "system", "content": system}] if system else []
        for turn in range(turns):
            messages.append({"role": "user", "content": f"{content} q{turn}"})
            messages.append({"role": "assistant", "content": f"{content} a{turn}"})
        yield messages


def test_pad_token_falls_back_to_eos_then_unk(fresh_tokenizer):
    tokenizer = fresh_tokenizer()
    assert tokenizer.pad_token is None
    assert ensure_pad_token(tokenizer) == tokenizer.eos_token == tokenizer.pad_token

    tokenizer = fresh_tokenizer()
    tokenizer.eos_token = None
    assert ensure_pad_token(tokenizer) == tokenizer.unk_token

    tokenizer = fresh_tokenizer()
    tokenizer.eos_token = None
    tokenizer.unk_token = None
    with pytest.raises(TuneforgeError, match="no pad, eos or unk"):
        ensure_pad_token(tokenizer)


def test_existing_pad_token_is_kept(tmp_path):
    from tuneforge.models.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(pad_token=True)
    assert ensure_pad_token(tokenizer) == "<pad>"


def test_model_template_is_kept(fresh_tokenizer):
    tokenizer = fresh_tokenizer()
    original = tokenizer.chat_template
    assert prepare_tokenizer(tokenizer) == "model"
    assert tokenizer.chat_template == original


def test_gemma_vocabulary_gets_the_gemma_fallback(fresh_tokenizer, tiny_gemma_dir):
    tokenizer = fresh_tokenizer(tiny_gemma_dir)
    assert not tokenizer.chat_template
    assert prepare_tokenizer(tokenizer) == "fallback-gemma"
    text = render(
        tokenizer,
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        generation_prompt=True,
    )
    assert text == "<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"
    assert stop_token_ids(tokenizer) == [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    ]


def _plain_tokenizer():
    """A word-level tokenizer with only `</s>`: no ChatML or Gemma turn tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, "x": 2, "user": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="[UNK]")


def test_chatml_fallback_ends_turns_with_im_end_or_eos(fresh_tokenizer):
    tokenizer = fresh_tokenizer()
    tokenizer.chat_template = None
    assert prepare_tokenizer(tokenizer) == "fallback-chatml"
    assert render(tokenizer, [{"role": "user", "content": "x"}], generation_prompt=False) == (
        "<|im_start|>user\nx<|im_end|>\n"
    )
    # Without <|im_end|> in the vocabulary, eos closes a turn, so generation stops on one token.
    plain = _plain_tokenizer()
    assert prepare_tokenizer(plain) == "fallback-chatml"
    assert render(plain, [{"role": "user", "content": "x"}], generation_prompt=False) == (
        "<|im_start|>user\nx</s>\n"
    )
    assert stop_token_ids(plain) == [1]


@pytest.mark.parametrize("template", [GEMMA_FALLBACK_TEMPLATE, chatml_fallback_template()])
def test_fallback_templates_have_the_prefix_property(fresh_tokenizer, template):
    tokenizer = fresh_tokenizer()
    tokenizer.chat_template = template
    for messages in _conversations():
        assert template_prefix_problem(tokenizer, messages) is None, messages


def test_prefix_check_catches_a_template_without_it(fresh_tokenizer):
    tokenizer = fresh_tokenizer()
    # Adds a turn counter to the generation prompt only: the prompt is not a prefix of the reply.
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant ({{ messages|length }}):{% endif %}"
    )
    assert "not prefix-stable" in template_prefix_problem(tokenizer)


def test_template_file_overrides_the_model(fresh_tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    tokenizer = fresh_tokenizer()
    assert prepare_tokenizer(tokenizer, path) == "file"
    assert (
        render(tokenizer, [{"role": "user", "content": "x"}], generation_prompt=False) == "[user]x"
    )


def test_bad_template_files_are_tuneforge_errors(fresh_tokenizer, tmp_path):
    with pytest.raises(TuneforgeError, match="template file not found"):
        prepare_tokenizer(fresh_tokenizer(), tmp_path / "missing.jinja")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(TuneforgeError, match="does not render"):
        prepare_tokenizer(fresh_tokenizer(), broken)
    empty = tmp_path / "empty.jinja"
    empty.write_text("  \n")
    with pytest.raises(TuneforgeError, match="empty"):
        prepare_tokenizer(fresh_tokenizer(), empty)


def test_save_and_load_round_trip_keeps_template_and_pad(fresh_tokenizer, tiny_gemma_dir, tmp_path):
    tokenizer = fresh_tokenizer(tiny_gemma_dir)
    prepare_tokenizer(tokenizer)
    save_tokenizer(tokenizer, tmp_path / "run" / "tokenizer")
    loaded = load_saved_tokenizer(tmp_path / "run" / "tokenizer")
    assert loaded.chat_template == GEMMA_FALLBACK_TEMPLATE
    assert loaded.pad_token == tokenizer.pad_token
    messages = [{"role": "user", "content": "hello"}]
    assert render(loaded, messages, generation_prompt=True) == render(
        tokenizer, messages, generation_prompt=True
    )


def test_loading_a_tokenizer_tuneforge_did_not_save(tmp_path, fresh_tokenizer, tiny_gemma_dir):
    with pytest.raises(TuneforgeError, match="no saved tokenizer"):
        load_saved_tokenizer(tmp_path)
    fresh_tokenizer(tiny_gemma_dir).save_pretrained(tmp_path / "raw")  # no template
    with pytest.raises(TuneforgeError, match="no chat template"):
        load_saved_tokenizer(tmp_path / "raw")
