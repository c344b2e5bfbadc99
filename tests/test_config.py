from __future__ import annotations

import pytest

from phonemekit.config import ModelConfig, from_dict, load_config_file
from phonemekit.errors import ConfigError


def test_round_trip():
    cfg = ModelConfig()
    assert from_dict(ModelConfig, cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "data,key",
    [
        ({"train": {"epochs": 3, "epoch": 4}}, "train.epoch"),
        ({"train": {"epochs": "three"}}, "train.epochs"),
        ({"train": {"lr": 5.0}}, "train.lr"),
        ({"encoder": {"layer": 1.5}}, "encoder.layer"),
        ({"audio": {"max_seconds": -1}}, "audio.max_seconds"),
        ({"train": {"schedule": "linear"}}, "train.schedule"),
        ({"head": []}, "head"),
    ],
)
def test_bad_config_names_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(ModelConfig, data)


def test_load_toml_and_json(tmp_path):
    (tmp_path / "m.toml").write_text('name = "x"\n[train]\nepochs = 2\n[head]\nkind = "mlp"\n')
    assert load_config_file(tmp_path / "m.toml").train.epochs == 2
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(tmp_path / "bad.json")
