"""Grid parsing: short keys, values (YAML, bracketed lists), names, and errors before any run."""

from __future__ import annotations

import pytest
from compare_helpers import LORA_CONFIG

from tuneforge.compare.grid import canonical_key, expand, parse_axis, parse_grid, split_values
from tuneforge.errors import ConfigError


def test_short_keys_map_to_config_keys():
    assert canonical_key("method") == "method.kind"
    assert canonical_key("lora.r") == "method.r"
    assert canonical_key("lora.alpha") == "method.alpha"
    assert canonical_key("train.lr") == "train.lr"
    assert canonical_key("method.r") == "method.r"


def test_values_split_on_top_level_commas_only():
    assert split_values("4,16,64") == ["4", "16", "64"]
    assert split_values("[q_proj, v_proj],all-linear") == ["[q_proj, v_proj]", "all-linear"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]


def test_axis_values_are_read_as_yaml():
    axis = parse_axis("train.lr=1e-4,5.0e-4,true")
    assert axis.key == "train.lr"
    assert axis.values == ("1e-4", 5e-4, True)  # YAML 1.1: 1e-4 without a dot is a string
    targets = parse_axis("lora.target_modules=[q_proj,v_proj],all-linear")
    assert targets.values == (["q_proj", "v_proj"], "all-linear")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lora.r", "expected KEY=V1,V2"),
        ("lora.r=4,,16", "an empty value"),
        ("lora.r=4,4", "listed twice"),
        ("data.dir=a,b", "cannot vary"),
    ],
)
def test_bad_axis_names_the_spec(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_axis(spec)
    assert spec.split("=")[0] in str(info.value)


def test_the_same_key_twice_is_refused():
    with pytest.raises(ConfigError, match=r"lora\.r=4 and method\.r=8 both set method\.r"):
        parse_grid(["lora.r=4", "method.r=8"])


def test_expand_is_the_cartesian_product_with_readable_names():
    axes, variants = expand(LORA_CONFIG, ["data.dir=x"], ["method=lora,qlora", "lora.r=4,16,64"])
    assert [a.key for a in axes] == ["method.kind", "method.r"]
    assert [v.name for v in variants] == [
        "lora_r4", "lora_r16", "lora_r64", "qlora_r4", "qlora_r16", "qlora_r64",
    ]  # fmt: skip
    by_name = {v.name: v for v in variants}
    assert by_name["qlora_r16"].config.method.kind == "qlora"
    assert by_name["qlora_r16"].config.method.quantization == "nf4"
    assert by_name["qlora_r16"].config.method.r == 16
    assert by_name["lora_r64"].config.data.dir == "x"  # the command's overrides apply to all
    assert by_name["lora_r4"].settings == {"method.kind": "lora", "method.r": 4}
    assert by_name["lora_r4"].overrides == ("method.kind=lora", "method.r=4")
    _, variants = expand(LORA_CONFIG, [], ["train.lr=1e-4,5e-4"])
    assert [v.name for v in variants] == ["lr1e-4", "lr5e-4"]
    assert [v.settings["train.lr"] for v in variants] == [1e-4, 5e-4]  # as validated


def test_no_grid_is_one_variant_named_base():
    _, variants = expand(LORA_CONFIG, [], [])
    assert [v.name for v in variants] == ["base"]


def test_colliding_short_names_fall_back_to_full_keys():
    # model.name is shown by its last path part, so two models named "tiny" would clash.
    _, variants = expand(LORA_CONFIG, [], ["model.name=/a/tiny,/b/tiny", "lora.r=4"])
    assert [v.name for v in variants] == [
        "model.name-a-tiny_method.r-4",
        "model.name-b-tiny_method.r-4",
    ]
    assert [v.config.model.name for v in variants] == ["/a/tiny", "/b/tiny"]


def test_unknown_grid_key_names_it_and_suggests():
    with pytest.raises(ConfigError) as info:
        expand(LORA_CONFIG, [], ["lora.rank=4,16"])
    text = str(info.value)
    assert "lora.rank" in text and "method.rank" in text and "method.r" in text


def test_invalid_grid_value_names_the_variant():
    with pytest.raises(ConfigError) as info:
        expand(LORA_CONFIG, [], ["method=lora,sparse"])
    assert "sparse" in str(info.value) and "method.kind" in str(info.value)


def test_incoherent_combination_is_refused_before_running():
    # qlora.yaml's base is 4-bit (nf4); a full fine-tune of it is invalid.
    qlora = LORA_CONFIG.parent / "qlora.yaml"
    with pytest.raises(ConfigError, match="full fine-tuning cannot train a 4-bit"):
        expand(qlora, ["method.quantization=nf4"], ["method=qlora,full"])
