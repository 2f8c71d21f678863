from pathlib import Path

import pytest

from tuneforge.config import PrepareConfig, TrainConfig, parse_override, resolve, to_yaml
from tuneforge.errors import ConfigError

# Training configs; configs/accelerate/ holds accelerate launcher configs (tests/train/test_distributed.py).
CONFIGS = sorted(
    p
    for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml")
    if p.parent.name != "accelerate"
)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 2\nmethod:\n  kind: lora\n  r: 8\n")
    cfg = resolve(TrainConfig, path, ["train.lr=5e-5", "method.target_modules=[q_proj, v_proj]"])
    assert cfg.train.lr == 5e-5  # override beats YAML
    assert cfg.train.epochs == 2  # YAML beats default
    assert cfg.train.batch_size == 8  # default
    assert cfg.method.r == 8
    assert cfg.method.target_modules == ["q_proj", "v_proj"]


def test_unknown_key_names_key_and_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rte: 0.1\n")
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, path)
    assert "train.learning_rte" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, None, ["train.epoch=3"])
    assert "unknown key 'train.epoch'" in str(err.value)
    assert "train.epochs" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, None, ["trian.lr=3"])
    assert "did you mean train" in str(err.value)


def test_wrong_type_names_field_and_expected_type():
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, None, ["train.batch_size=many"])
    message = str(err.value)
    assert "train.batch_size" in message and "an integer" in message
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, None, ["method.kind=lorra"])
    assert "method.kind" in str(err.value) and "'qlora'" in str(err.value)


def test_impossible_combination_is_refused():
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, None, ["method.kind=full", "method.quantization=nf4"])
    assert "method" in str(err.value) and "qlora" in str(err.value)


def test_qlora_implies_nf4():
    assert resolve(TrainConfig, None, ["method.kind=qlora"]).method.quantization == "nf4"


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        resolve(TrainConfig, path)
    assert f"{path}:" in str(err.value)


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_resolved_config_round_trips(tmp_path):
    cfg = resolve(TrainConfig, None, ["train.lr=1e-4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert resolve(TrainConfig, path) == cfg


def test_prepare_config_checks_split_and_template():
    with pytest.raises(ConfigError) as err:
        resolve(PrepareConfig, base={"inputs": ["a"], "output_dir": "o", "split": [0.5, 0.5, 0.5]})
    assert "split" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve(PrepareConfig, base={"inputs": ["a"], "output_dir": "o", "template": "no slot"})
    assert "{text}" in str(err.value)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = resolve(TrainConfig, path)
    assert cfg.model.name


def test_packing_is_a_boolean_on_by_default():
    from tuneforge.config import ConfigError, TrainConfig, resolve

    assert resolve(TrainConfig, base={"data": {"dir": "d"}}).data.packing is True
    assert resolve(TrainConfig, overrides=["data.packing=false"]).data.packing is False
    with pytest.raises(ConfigError, match="packing"):
        resolve(TrainConfig, base={"data": {"packing": "sometimes"}})


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("train.lr=inf", "finite number"),
        ("train.epochs=1e999", "finite number"),
        ("train.lr=nan", "finite number"),
        ("train.seed=-1", "greater than or equal to 0"),
        (f"train.seed={2**32}", "less than"),
    ],
)
def test_infinite_numbers_and_out_of_range_seeds_are_refused(override, phrase):
    with pytest.raises(ConfigError) as info:
        resolve(TrainConfig, None, [override])
    assert override.split("=")[0] in str(info.value) and phrase in str(info.value)


def test_split_messages_say_which_rule_and_describe_the_type():
    with pytest.raises(ConfigError) as info:
        resolve(PrepareConfig, base={"inputs": ["a"], "output_dir": "o", "split": [0, 0.5, 0.5]})
    assert "train fraction" in str(info.value) and "a list of 3 numbers" in str(info.value)


def test_bad_device_is_a_tuneforge_error():
    from tuneforge.errors import TuneforgeError
    from tuneforge.models.load import check_device

    with pytest.raises(TuneforgeError, match="'bogus': not a device"):
        check_device("bogus")
    check_device("cpu")


def test_booleans_are_not_numbers():
    with pytest.raises(ConfigError, match=r"train\.batch_size'?: must be a number, not true"):
        resolve(TrainConfig, None, ["train.batch_size=true"])
    cfg = resolve(TrainConfig, None, ["train.share_prefix=false", "train.batch_size=4"])
    assert cfg.train.share_prefix is False and cfg.train.batch_size == 4


def test_errors_name_the_override_that_set_the_value(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 2\n")
    with pytest.raises(ConfigError) as info:
        resolve(TrainConfig, config, ["train.lr=abc"])
    assert str(info.value).startswith("override train.lr=abc: field 'train.lr'")
    config.write_text("train:\n  epochs: -2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: field 'train\.epochs'"):
        resolve(TrainConfig, config, ["train.lr=1e-3"])


def test_a_key_given_twice_in_yaml_is_refused_with_its_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: 1e-4\n  epochs: 2\n  lr: 1e-2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: .*'lr' is given twice"):
        resolve(TrainConfig, config)
