import math
import tomllib
from pathlib import Path

import pytest

from cisctool.config import config_hash, from_dict, load_config, to_dict, to_toml, with_overrides
from cisctool.staleness import hashed_settings
from cisctool.data.demo import make_demo
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


@pytest.mark.parametrize(("names", "rectify", "unguided"), [
    (["background", "cat", "dog"], {}, (0,)),
    (["cat", "Background", "dog"], {}, (1,)),
    (["road", "car", "sky"], {}, ()),  # Cityscapes-like: no background, every class guided
    (["background", "cat", "dog"], {"guide_exclude": []}, ()),  # an explicit list wins, empty too
    (["background", "cat", "dog"], {"guide_exclude": [2]}, (2,)),
])
def test_a_class_named_background_gets_no_guide_unless_the_config_says(names, rectify, unguided):
    config = from_dict({"data": {**MINIMAL["data"], "class_names": names}, "rectify": rectify})
    assert config.rectify.guide_exclude == unguided
    assert from_dict(tomllib.loads(to_toml(config))) == config  # the resolved file keeps what was chosen


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


def test_rounds_continue_from_the_previous_model_at_a_rate_relative_to_lr():
    config = from_dict(MINIMAL)
    assert config.train.init == "previous" and config.train.round_epochs == 5.0
    assert config.train.rate(0) == 0.01 and config.train.rate(2) == 0.002  # the rate the benchmark configs wrote
    voc = from_dict({"dataset": "voc", "data": {"root": "x"}}).train
    assert voc.rate(0) == 0.001 and voc.rate(1) == 0.0002  # the preset pins VOC's rate
    explicit = from_dict({**MINIMAL, "train": {"lr": 0.01, "round_lr": 0.005}}).train
    assert explicit.rate(0) == 0.01 and explicit.rate(1) == 0.005  # an explicit round_lr still wins
    assert (config.rectify.tta_scales, config.rectify.tta_flip) == ((1.0, 1.5), False)


def test_equal_round_rates_hash_alike_and_old_runs_keep_their_hashes():
    absolute = from_dict({**MINIMAL, "train": {"lr": 0.01, "round_lr": 0.002}})
    relative = from_dict({**MINIMAL, "train": {"lr": 0.01, "round_lr_mult": 0.2}})
    assert hashed_settings(absolute) == hashed_settings(relative)
    assert hashed_settings(relative) != hashed_settings(with_overrides(relative, {"train.round_lr_mult": 0.3}))
    # a run written before round_lr_mult, snapshots and pseudo_source existed: round_lr 0 meant round 0's rate
    before = from_dict({**MINIMAL, "train": {"round_lr_mult": 1.0}})
    train, rectify = hashed_settings(before)["train"], hashed_settings(before)["rectify"]
    assert train["round_lr"] == 0.0 and not {"round_lr_mult", "snapshots"} & set(train)
    assert "pseudo_source" not in rectify
    assert hashed_settings(from_dict(MINIMAL))["train"]["round_lr"] == 0.002


@pytest.mark.parametrize("kind", ["shapes", "aerial"])
def test_the_generated_benchmark_configs_resolve_as_they_did_before_the_defaults_moved(tmp_path: Path, kind: str):
    generated = load_config(make_demo(tmp_path / "data", num_labeled=2, num_unlabeled=2, num_val=1, kind=kind))
    frozen = (Path(__file__).parent / "fixtures" / f"demo-config-before-defaults-{kind}.toml").read_text()
    before_path = tmp_path / "data" / "before.toml"
    frozen = frozen.replace("ROOT", generated.data.root).replace("PRETRAINED", generated.model.pretrained)
    before_path.write_text(frozen)
    before = load_config(before_path, {"rectify.conf_adaptive": False})  # made before the key was the default
    now, then = to_dict(generated), to_dict(before)
    differing = {f"{section}.{key}" for section in then if isinstance(then[section], dict)
                 for key in then[section] if now[section][key] != then[section][key]}  # fmt: skip
    # 0.002 written out then, 0.2 × lr now; FreeMatch's class thresholds became the default
    assert differing == {"train.round_lr", "rectify.conf_adaptive"} and generated.rectify.conf_adaptive
    assert generated.train.rate(1) == before.train.rate(1) == 0.002
    assert hashed_settings(with_overrides(generated, {"rectify.conf_adaptive": False})) == hashed_settings(before)
    assert "init" not in (tmp_path / "data" / "cisctool.toml").read_text()  # states only what differs


def test_the_official_profile_pins_every_round_and_baseline_key(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nroot = "."\nnum_classes = 3\n[train]\nround_lr_mult = 0.5\nsnapshots = 2\n'
                    '[rectify]\npseudo_source = "masks"\nreliability = "stability"\n')
    official = load_config(path, {"profile": "official"})
    assert (official.train.round_lr_mult, official.train.snapshots, official.train.round_epochs) == (1.0, 0, 0.0)
    assert official.train.rate(1) == official.train.lr and official.train.init == "scratch"
    assert (official.rectify.pseudo_source, official.rectify.reliability) == ("prediction", "cisc")
    assert not official.rectify.conf_adaptive and load_config(path).rectify.conf_adaptive


@pytest.mark.parametrize(
    "train, rectify, fragment",
    [({"round_lr_mult": -0.1}, {}, "train.round_lr_mult must be ≥ 0, got -0.1"),
     ({"round_lr_mult": 0.0}, {}, "train.round_lr_mult must be > 0 where train.round_lr is 0"),
     ({"snapshots": -1}, {}, "train.snapshots must be ≥ 0, got -1"),
     ({}, {"reliability": "stability"}, 'rectify.reliability = "stability" needs train.snapshots ≥ 1'),
     ({}, {"pseudo_source": "truth"}, "rectify.pseudo_source = 'truth' is not one of prediction, masks")],
)  # fmt: skip
def test_bad_round_and_baseline_keys_name_the_key(train, rectify, fragment):
    with pytest.raises(InputError) as error:
        from_dict({**MINIMAL, "train": train, "rectify": rectify}, "my.toml")
    assert str(error.value).startswith("my.toml: ") and fragment in str(error.value)


@pytest.mark.parametrize("name", ["voc", "cityscapes", "coco"])
def test_the_example_configs_load_and_get_the_recipe(name: str):
    config = load_config(Path(__file__).parents[1] / "examples" / f"{name}.toml")
    assert config.dataset == name and config.data.num_classes == {"voc": 21, "cityscapes": 19, "coco": 81}[name]
    assert config.train.init == "previous" and config.train.round_epochs == 5.0
    assert config.train.rate(1) == float(f"{0.2 * config.train.lr:.12g}")  # relative to the preset's lr
    assert (config.rectify.tta_scales, config.rectify.tta_flip) == ((1.0, 1.5), False)
