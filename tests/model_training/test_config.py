"""The training configuration: YAML into typed dataclasses, unknown keys and bad values refused by name."""

from pathlib import Path

import pytest
import yaml

from model_training.config import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    TrainConfig,
    config_from_dict,
    load_config,
    save_config,
)
from model_training.errors import ConfigError


@pytest.mark.parametrize("name", ["demo.yaml", "tiny.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIG_DIR / name)
    assert isinstance(config, TrainConfig)


def test_demo_is_the_default_and_spells_out_every_key():
    assert DEFAULT_CONFIG.name == "demo.yaml"
    written = yaml.safe_load(DEFAULT_CONFIG.read_text())
    every_key = TrainConfig().to_dict()
    assert written.keys() == every_key.keys()
    for section, values in every_key.items():
        if isinstance(values, dict):
            assert written[section].keys() == values.keys(), section


def test_the_release_rule_defaults_to_auroc_ci_low_080_and_ppv_030():
    release = load_config(DEFAULT_CONFIG).release
    assert (release.min_auroc_ci_low, release.min_ppv, release.min_positives) == (0.80, 0.30, 10)
    assert config_from_dict({"release": {"min_ppv": 0.5}}).release.min_ppv == 0.5


def test_values_are_typed():
    config = config_from_dict({"model": {"widths": [8, 16]}, "pretrain": {"lr": 1, "loss": "vicreg"}})
    assert config.model.widths == (8, 16) and config.pretrain.lr == 1.0 and config.pretrain.loss == "vicreg"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pretrian": {}}, r"unknown key\(s\) \['pretrian'\]"),
        ({"model": {"widht": 3}}, r"unknown key\(s\) \['model.widht'\]"),
        ({"pretrain": {"loss": "triplet"}}, r"pretrain.loss: 'triplet' is not one of"),
        ({"labs": {"encoder": "thawed"}}, "labs.encoder"),
        ({"model": {"widths": 8}}, "model.widths: expected a list"),
        ({"batch_size": "big"}, "batch_size: expected int"),
        ({"label_fraction": 0.0}, r"label_fraction: must be in \(0, 1\]"),
        ({"diagnosis": {"finetune_encoder": True, "lab_aux_weight": 0}}, "lab heads no longer match"),
        ({"release": {"min_ppv": 30}}, r"release.min_ppv: must be in \[0, 1\]"),
        ({"release": {"min_auroc": 0.8}}, r"unknown key\(s\) \['release.min_auroc'\]"),
        ({"release": {"min_positives": 0}}, "release.min_positives: must be at least 1"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_a_file_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: {epochs: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


def test_overrides_use_dotted_keys(tmp_path):
    config = load_config(CONFIG_DIR / "tiny.yaml", {"device": "cuda", "pretrain.loss": "vicreg"})
    assert config.device == "cuda" and config.pretrain.loss == "vicreg"


def test_saved_config_loads_back_identically(tmp_path: Path):
    config = load_config(CONFIG_DIR / "tiny.yaml")
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
