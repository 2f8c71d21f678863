"""`--to ollama`: the Modelfile TEMPLATE renders conversations exactly as training did."""

from __future__ import annotations

import re

import pytest
from transformers import AutoTokenizer

from tuneforge.errors import TuneforgeError
from tuneforge.export import gotemplate
from tuneforge.export.ollama import check_template, derive_parts, go_template
from tuneforge.models.tokenizer import chatml_fallback_template, prepare_tokenizer

# SmolLM2-Instruct's own template: a default system prompt when the conversation has none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "You route support tickets.\nAnswer with one label."},
    {"role": "user", "content": "My parcel never came."},
    {"role": "assistant", "content": "delivery_delay"},
    {"role": "user", "content": "And I was charged twice!  {{ .Content }}"},
    {"role": "assistant", "content": "double_charge"},
    {"role": "user", "content": "thanks"},
]


# -- the Go template renderer, on templates with known output ------------------------------------


def test_renderer_ollama_chatml_with_trim_markers():
    template = (
        "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n"
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    )
    data = {"System": "S", "Messages": [{"Role": "user", "Content": "hi"}]}
    assert gotemplate.render(template, data) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert gotemplate.render(template, {**data, "System": ""}).startswith("<|im_start|>user")


def test_renderer_functions_variables_and_else_if():
    data = {"Messages": [{"Role": "system", "Content": "s"}, {"Role": "user", "Content": "u"}]}
    cases = {
        '{{ range $i, $m := .Messages }}{{ $i }}{{ $m.Role }};{{ end }}': "0system;1user;",
        '{{ (index $.Messages 0).Role }}': "system",
        '{{ len .Messages }} {{ .Messages | len }}': "2 2",
        '{{ range .Messages }}{{ if eq .Role "x" "user" }}U{{ else if eq .Role "system" }}S'
        "{{ else }}?{{ end }}{{ end }}": "SU",
        '{{ and 1 "" 2 }}|{{ or 0 "" "z" }}|{{ not 0 }}': "|z|true",
        '{{ range slice .Messages 1 }}{{ .Content }}{{ end }}': "u",
        '{{ range .Missing }}x{{ else }}none{{ end }}': "none",
        '{{/* a comment */}}a{{ "\\n" }}b  {{- " c" -}}  d': "a\nb cd",
        "{{ if not (and (eq 1 1) (eq (index $.Messages 1).Role \"user\")) }}no{{ else }}yes{{ end }}": "yes",
    }  # fmt: skip
    for template, expected in cases.items():
        assert gotemplate.render(template, data) == expected, template


def test_renderer_rejects_what_it_does_not_support():
    for template in ("{{ $x := 1 }}", "{{ with .System }}x{{ end }}", "{{ if 1 }}", "{{ printf }}"):
        with pytest.raises(TuneforgeError, match="Go template"):
            gotemplate.render(template, {})


# -- TEMPLATE == chat template -------------------------------------------------------------------


def _tokenizers(tiny_model_dir, tmp_path_factory):
    from tuneforge.models.tiny import build_tiny_causal_lm

    chatml = AutoTokenizer.from_pretrained(tiny_model_dir)
    smollm2 = AutoTokenizer.from_pretrained(tiny_model_dir)
    smollm2.chat_template = SMOLLM2_TEMPLATE
    eos_end = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos_end.chat_template = chatml_fallback_template("<|endoftext|>")
    gemma = AutoTokenizer.from_pretrained(
        build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-gemma"), "gemma")
    )
    prepare_tokenizer(gemma)  # no template of its own: the Gemma fallback (system folded)
    return {"chatml": chatml, "smollm2": smollm2, "chatml-eos": eos_end, "gemma": gemma}


def test_template_renders_like_the_chat_template_multi_turn(tiny_model_dir, tmp_path_factory):
    for name, tokenizer in _tokenizers(tiny_model_dir, tmp_path_factory).items():
        parts = derive_parts(tokenizer)
        assert parts.family == ("fold" if name == "gemma" else "affix"), name
        template = go_template(parts)
        check_template(template, tokenizer)
        for end in range(2, len(CONVERSATION) + 1, 2):
            for messages in (CONVERSATION[:end], CONVERSATION[1:end]):
                expected = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
                got = gotemplate.render(template, gotemplate.ollama_data(messages))
                assert got == expected, (name, messages)


def test_unreproducible_template_fails_clearly(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}"
    )
    with pytest.raises(TuneforgeError, match="cannot be reproduced as an Ollama TEMPLATE"):
        derive_parts(tokenizer)


# -- the export ----------------------------------------------------------------------------------


def _modelfile(path) -> dict:
    text = path.read_text(encoding="utf-8")
    return {
        "from": re.search(r"^FROM (.+)$", text, re.M).group(1),
        "template": re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S).group(1),
        "system": re.search(r'^SYSTEM """(.*?)"""$', text, re.M | re.S).group(1),
        "stops": re.findall(r'^PARAMETER stop "(.+)"$', text, re.M),
    }


def test_ollama_export(tiny_run, export, tmp_path):
    from tuneforge.models.tokenizer import load_saved_tokenizer

    run = tiny_run("classification", "lora")
    result = export(run, "ollama", tmp_path / "ollama")
    assert result.metadata["quant"] == "q8_0" and result.validation.passed
    modelfile = _modelfile(result.out / "Modelfile")
    assert modelfile["from"] == "./model-q8_0.gguf" and (result.out / "model-q8_0.gguf").is_file()
    assert modelfile["stops"] == ["<|im_end|>"]
    training_system = "Classify the item. Answer with the label only."
    assert modelfile["system"] == training_system
    # Ollama sends SYSTEM as the first message when a request has none: same text as training.
    tokenizer = load_saved_tokenizer(run)
    user_turns = [m for m in CONVERSATION if m["role"] != "system"]
    ollama_messages = [{"role": "system", "content": modelfile["system"]}, *user_turns]
    rendered = gotemplate.render(modelfile["template"], gotemplate.ollama_data(ollama_messages))
    assert rendered == tokenizer.apply_chat_template(
        ollama_messages, tokenize=False, add_generation_prompt=True
    )
    assert any(line.startswith("ollama create ") for line in result.instructions)


def test_ollama_export_of_an_unreproducible_template_writes_nothing(
    tiny_run, export, copy_run, tmp_path
):
    run = copy_run(tiny_run("classification", "lora"))
    (run / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] | upper }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}>{% endif %}"
    )
    with pytest.raises(TuneforgeError, match="Ollama TEMPLATE"):
        export(run, "ollama", tmp_path / "ollama")
    assert not (tmp_path / "ollama").exists()
