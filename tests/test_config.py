"""Config: defaults, YAML round trip, overrides and the errors that name the bad key."""

from __future__ import annotations

import pytest

from landmarks.config import Config
from landmarks.errors import ConfigError


def test_yaml_round_trip_keeps_every_field(tmp_path):
    config = Config(backbone="efficientnet_b3", image_size=384, tta_scales=[0.7071, 1.0])
    path = tmp_path / "run.yaml"
    config.save(str(path))
    assert Config.load(str(path)) == config


def test_preset_names_only_changed_keys(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("backbone: efficientnet_b5\nimage_size: 768\n")
    config = Config.load(str(path))
    assert (config.backbone, config.image_size) == ("efficientnet_b5", 768)
    assert config.embedding_dim == Config().embedding_dim


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("{}\n")
    config = Config.load(
        str(path),
        ["image_size=512", "tta_scales=[0.7071, 1, 1.4142]", "weights=null", "tta_flip=true"],
    )
    assert config.image_size == 512
    assert config.tta_scales == [0.7071, 1.0, 1.4142]
    assert config.weights is None
    assert config.tta_flip is True


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert Config.from_dict({"learning_rate": 1}).learning_rate == 1.0
    with pytest.raises(ConfigError, match="image_size: expected an integer"):
        Config.from_dict({"image_size": 256.5})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"backbon": "x"}, "unknown config key 'backbon'"),
        ({"tta_flip": "yes"}, "tta_flip: expected true or false"),
        ({"dilations": 6}, "dilations: expected a list"),
        ({"backbone": 3}, "backbone: expected a string"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(values)


def test_bad_files_and_overrides_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.load(str(tmp_path / "missing.yaml"))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        Config.load(str(listing))
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        Config.load(str(broken))
    with pytest.raises(ConfigError, match="expected key=value"):
        Config().apply_overrides(["image_size"])


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "config.yaml"
    Config().save(str(path))
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]
