import math
import tomllib
from pathlib import Path

import pytest

from cisctool.config import config_hash, from_dict, load_config, to_toml, with_overrides
from cisctool.errors import InputError

MINIMAL = {"data": {"root": "data", "num_classes": 3}}


def test_defaults_fill_every_key_but_root_and_classes():
    config = from_dict(MINIMAL)
    assert config.train.epochs == 80 and config.train.crop_size == 321
    assert config.index.factory == "Flat" and config.rectify.margin == math.inf
    assert config.class_names == ("class_0", "class_1", "class_2")


def test_toml_round_trip_and_hash(tmp_path: Path):
    config = from_dict({**MINIMAL, "rectify": {"guide_exclude": [0]}})
    again = from_dict(tomllib.loads(to_toml(config)))
    assert again == config
    assert config_hash(again) == config_hash(config)
    assert config_hash(from_dict({**MINIMAL, "train": {"lr": 0.01}})) != config_hash(config)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({**MINIMAL, "trian": {}}, "unknown key 'trian'"),
        ({"data": {**MINIMAL["data"], "labelled": "x"}}, "unknown key 'data.labelled'; valid keys in [data]:"),
        ({"data": {"root": "x", "num_classes": "3"}}, "data.num_classes must be int"),
        ({"data": {"root": "x"}}, "data.num_classes is required"),
        ({"data": {"num_classes": 3}}, "data.root is required"),
        ({**MINIMAL, "train": {"amp": 1}}, "train.amp must be bool"),
        ({**MINIMAL, "rectify": {"guide": "closest"}}, "rectify.guide = 'closest' is not one of"),
        ({"data": {**MINIMAL["data"], "class_names": ["a"]}}, "has 1 names"),
        ({**MINIMAL, "dataset": "kitti"}, "unknown dataset preset 'kitti'"),
        ({**MINIMAL, "train": {"consistency_rampup": 1.5}}, "train.consistency_rampup must be in [0, 1], got 1.5"),
        ({**MINIMAL, "train": {"ohem_threshold": -0.1}}, "train.ohem_threshold must be in [0, 1], got -0.1"),
        ({**MINIMAL, "train": {"ohem_min_kept": 2.0}}, "train.ohem_min_kept must be in [0, 1], got 2.0"),
        ({**MINIMAL, "train": {"round_batch_size": -2}}, "train.round_batch_size must be ≥ 0, got -2"),
        ({**MINIMAL, "rectify": {"prior_alignment": -1.0}}, "rectify.prior_alignment must be ≥ 0, got -1.0"),
        ({**MINIMAL, "train": {"pseudo_class_balance": -1.0}}, "train.pseudo_class_balance must be ≥ 0, got -1.0"),
    ],
)
def test_bad_config_names_the_key(raw, fragment):
    with pytest.raises(InputError) as error:
        from_dict(raw, "my.toml")
    message = str(error.value)
    assert message.startswith("my.toml: ") and fragment in message and "\n" not in message


def test_unknown_key_lists_valid_ones():
    with pytest.raises(InputError, match="crop_size.*epochs"):
        from_dict({**MINIMAL, "train": {"epoch": 3}})


def test_preset_fills_and_user_keys_win():
    config = from_dict({"dataset": "voc", "data": {"root": "x"}, "train": {"crop_size": 513}})
    assert config.data.num_classes == 21 and config.class_names[15] == "person"
    assert config.train.crop_size == 513 and config.rectify.guide_exclude == (0,)


def test_load_config_resolves_root_and_overrides(tmp_path: Path):
    path = tmp_path / "sub" / "c.toml"
    path.parent.mkdir()
    path.write_text('[data]\nroot = "images"\nnum_classes = 2\n[train]\nmax_steps = 5\n')
    config = load_config(path, {"train.max_steps": 7, "train.amp": False})
    assert config.data_root == path.parent / "images"
    assert config.train.max_steps == 7 and config.train.amp is False


def test_load_config_file_errors(tmp_path: Path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(bad)


def test_official_profile_sets_the_papers_choices_over_the_file_and_set_wins(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nroot = "."\nnum_classes = 3\n[train]\ninit = "previous"\nround_lr = 0.002\n'
                    'round_batch_size = 4\n'
                    '[rectify]\nguide = "nearest"\n')
    default = load_config(path)
    assert default.profile == "default" and default.train.init == "previous" and default.rectify.guide == "nearest"
    official = load_config(path, {"profile": "official"})
    assert (official.rectify.guide, official.rectify.weight_mode, official.train.consistency_weight) == (
        "random", "official", 1.0)
    assert official.train.init == "scratch" and official.train.round_lr == 0.0
    assert default.train.round_batch_size == 4 and official.train.round_batch_size == 0
    assert official.train.ohem_threshold == 0.0
    assert official.rectify.tta and official.rectify.tta_flip
    assert official.rectify.tta_scales == (0.5, 0.75, 1.0, 1.5, 2.0)
    assert official.rectify.prior_alignment == 0.0 and official.train.pseudo_class_balance == 0.0
    assert official.rectify.select == "reliable" and official.rectify.ratio == 0.5
    wins = load_config(path, {"profile": "official", "rectify.guide": "nearest"})
    assert wins.rectify.guide == "nearest" and wins.rectify.weight_mode == "official"
    later = with_overrides(wins, {"train.seed": 3})  # a later override keeps what --set chose
    assert later.rectify.guide == "nearest" and later.train.seed == 3
    with pytest.raises(InputError, match="profile = 'paper' is not one of default, official"):
        load_config(path, {"profile": "paper"})


@pytest.mark.parametrize(("key", "value"), [("model.backbone", "resnet18"), ("model.arch", "unet"),
                                            ("rectify.guide", "closest"), ("rectify.weight_mode", "max")])
def test_a_choice_outside_its_list_is_refused_when_the_config_loads(tmp_path: Path, key: str, value: str):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nroot = "."\nnum_classes = 3\n')
    with pytest.raises(InputError, match=f"c.toml: {key} = '{value}' is not one of "):
        load_config(path, {key: value})
