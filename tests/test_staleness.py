"""The staleness table: every config field classified, each classification true of the hashes and
checks, and the hashes of existing runs kept byte for byte.

The pinned values were computed by the package before the table existed: a changed hash would make
every finished model, index or pseudo-label file look stale after an upgrade.
"""

import dataclasses
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cisctool import staleness
from cisctool.config import SECTIONS, Config, from_dict, load_config, with_overrides
from cisctool.staleness import (
    KEYS,
    NOT_ADDED,
    Output,
    hashed_settings,
    index_settings,
    pseudo_resume_settings,
    value_of,
)
from cisctool.steps.rectify import pseudo_inputs_hash
from cisctool.steps.train_data import PseudoSelection, training_signature

FIXTURES = Path(__file__).parent / "fixtures"
VARIANTS = {
    "as written": {},
    "official": {"profile": "official"},
    "consistency on": {"train.consistency_weight": 1.0, "train.consistency_rampup": 0.1},
    "ohem on": {"train.ohem_threshold": 0.7, "train.ohem_min_kept": 0.2},
    "self-training (ST)": {"rectify.enabled": False},
    "added keys moved": {"rectify.reliability": "stability", "train.snapshots": 2, "rectify.pseudo_source": "masks",
                         "rectify.prior_alignment": 0.5, "model.decoder_stride": 2, "train.pseudo_class_balance": 1.0},
    "resume-free moved": {"train.workers": 7, "train.amp": False, "eval.mode": "slide"},
    "round rate": {"train.round_lr": 0.0, "train.round_lr_mult": 0.3},
    "schedule": {"rectify.select": "all", "rectify.ratio": 0.3, "rectify.batch_size": 4},
}  # fmt: skip

PINNED = {  # hashed_settings (sha256 of its JSON), training_signature (round 0, round 1, round 2 on 2
    # processes), pseudo_inputs_hash: their first 16 hex digits as the package wrote them before the table
    "shapes: as written": ('d0176567b60027f2', '9089c34278df2ec5', '15a040288e57f9f5', '2f83fc9045054601', 'bdf9f7bb8a69f5f5'),
    "shapes: official": ('4f8b0cca35834b99', '57240dd5947fa826', '25d8b7c0ed06995c', 'd364b4f793fdb744', 'c6b12c6f58564538'),
    "shapes: consistency on": ('e7fc23a82eb0d6bb', '52585d6f3d514bfc', '2f32ef3f5f10b19b', 'aa16638606d96bac', 'bdf9f7bb8a69f5f5'),
    "shapes: ohem on": ('15b50fd96cf7b4a1', '0f30cbc087bb49ee', 'c97cb8b1bed41014', '909d7f3d86917cd0', 'bdf9f7bb8a69f5f5'),
    "shapes: self-training (ST)": ('f452233777031366', '9089c34278df2ec5', '15a040288e57f9f5', '2f83fc9045054601', '7c1e166b1e56eb1e'),
    "shapes: added keys moved": ('9df41ab29a7c41e0', 'fdc13703786d8f3c', '600f891c4ef29448', 'fe444844fec393d4', '9936a75e0f39998d'),
    "shapes: resume-free moved": ('597489e34bbd1009', '9089c34278df2ec5', '15a040288e57f9f5', '2f83fc9045054601', 'bdf9f7bb8a69f5f5'),
    "shapes: round rate": ('6accf4cb871afc3b', '9089c34278df2ec5', 'ffbc840a68f70b73', 'd48a87fc12b1ff94', 'bdf9f7bb8a69f5f5'),
    "shapes: schedule": ('e7d4c981ad4251d3', '9089c34278df2ec5', '1635d8cd4f7943c5', '16521d4b0a1ebf78', 'bdf9f7bb8a69f5f5'),
    "aerial: as written": ('901fa49f3bd9abc0', 'c22a8e2bee39776f', '10d051ef26bc3fef', '2e0fee01d6121f3f', '27f21c817341bc4a'),
    "aerial: official": ('a88a7b8baff8b574', '6fcb62e8cd39356d', '447597f40b03646f', '0d9e9af0139e2a76', 'ef9cfde4fd8af893'),
    "aerial: consistency on": ('d2d450a1316f8e6e', 'bb25ab226db74afe', '086d1e02525e4179', 'd6ed3dae8d021021', '27f21c817341bc4a'),
    "aerial: ohem on": ('c4a9ca352f93b34f', 'a9aad33bfbbba005', '425fe3ecd259cbe8', '81df185cab3017fd', '27f21c817341bc4a'),
    "aerial: self-training (ST)": ('aa07ed789639dbfe', 'c22a8e2bee39776f', '10d051ef26bc3fef', '2e0fee01d6121f3f', '38680ee0218c9f60'),
    "aerial: added keys moved": ('a39018604df70dcf', '100d7eaee4548b0e', 'c3cbfad03928dcea', '2b9d3f98e87fc81d', '058353826a289d81'),
    "aerial: resume-free moved": ('9e13dbfff269d9a7', 'c22a8e2bee39776f', '10d051ef26bc3fef', '2e0fee01d6121f3f', '27f21c817341bc4a'),
    "aerial: round rate": ('102281318c2fd3d1', 'c22a8e2bee39776f', '5356a802b4a017ba', '19a1d899fc40af69', '27f21c817341bc4a'),
    "aerial: schedule": ('df6c742d6553d52e', 'c22a8e2bee39776f', '2f8008c44e046496', 'b052dc6aa8c8f946', '27f21c817341bc4a'),
}  # fmt: skip

def frozen_config(tmp_path: Path, kind: str) -> Config:
    """The demo's frozen config (tests/fixtures) at fixed paths, so its hashes do not depend on the machine."""
    text = (FIXTURES / f"demo-config-before-defaults-{kind}.toml").read_text()
    path = tmp_path / f"{kind}.toml"
    path.write_text(text.replace("ROOT", "/frozen/data").replace("PRETRAINED", "/frozen/pretrained.pth"))
    return load_config(path, {"rectify.conf_adaptive": False})  # the runs made before it was the default


@pytest.mark.parametrize("variant", list(PINNED))
def test_hashes_and_signatures_of_existing_runs_are_unchanged(tmp_path: Path, variant: str):
    kind, name = variant.split(": ")
    config = with_overrides(frozen_config(tmp_path, kind), VARIANTS[name])
    pseudo = PseudoSelection(Path("pseudo.h5"), [], np.zeros(0), 0, "fingerprint")
    settings = json.dumps(hashed_settings(config), sort_keys=True, default=str)
    values = (
        hashlib.sha256(settings.encode()).hexdigest(),
        training_signature(config, 0, 1, None),
        training_signature(config, 1, 1, pseudo),
        training_signature(config, 2, 2, pseudo),
        pseudo_inputs_hash(config),
    )
    assert tuple(value[:16] for value in values) == PINNED[variant]


def config_fields() -> list[str]:
    """Every field of every config dataclass, dotted ("train.lr"); `source` (where the file was read,
    not a setting: `compare=False`) aside."""
    keys = []
    for item in dataclasses.fields(Config):
        if item.name in SECTIONS:
            keys += [f"{item.name}.{inner.name}" for inner in dataclasses.fields(SECTIONS[item.name])]
        elif item.compare:
            keys.append(item.name)
    return keys


def test_every_config_field_says_which_outputs_it_makes_stale():
    unclassified = [key for key in config_fields() if key not in KEYS]
    assert not unclassified, f"not classified in cisctool/staleness.py KEYS: {', '.join(unclassified)}"
    assert set(KEYS) == set(config_fields())  # nor a row for a key that is gone


def perturbed(config: Config, dotted: str) -> Config:
    """`config` with one key moved to another value of its type (unvalidated: only hashes read it)."""
    *section, name = dotted.split(".")
    holder = getattr(config, section[0]) if section else config
    value, hint = getattr(holder, name), typing.get_type_hints(type(holder))[name]
    if typing.get_origin(hint) is typing.Literal:
        new = next((choice for choice in typing.get_args(hint) if choice != value), value + "-other")
    elif typing.get_origin(hint) is tuple:
        new = value + ({str: "extra", float: 2.0, int: 1}[typing.get_args(hint)[0]],)
    elif isinstance(value, bool):
        new = not value
    elif isinstance(value, (int, float)):
        new = 0.5 if value == math.inf else value + (0.25 if isinstance(value, float) else 1)
    else:
        new = value + "-other"
    replaced = dataclasses.replace(holder, **{name: new})
    return dataclasses.replace(config, **({section[0]: replaced} if section else {name: new}))


def outputs_of(config: Config) -> dict[Output, Any]:
    """What each output's staleness check compares, for one config."""
    return {
        Output.ALL_ROUNDS: training_signature(config, 0, 1, None),
        Output.LATER_ROUNDS: training_signature(config, 1, 1, None),
        Output.INDEX: index_settings(config),
        Output.PSEUDO: pseudo_inputs_hash(config),
        Output.PSEUDO_RESUME: pseudo_resume_settings(config),
    }


SWITCHED_ON = {"train": {"consistency_weight": 1.0, "ohem_threshold": 0.7}}


@pytest.mark.parametrize("dotted", list(KEYS))
def test_a_key_changes_exactly_the_outputs_it_is_classified_under(dotted: str):
    config = from_dict({"data": {"root": "/frozen/data", "num_classes": 3}, **SWITCHED_ON})
    before, after = outputs_of(config), outputs_of(perturbed(config, dotted))
    changed = {output for output in before if before[output] != after[output]}
    affects = KEYS[dotted].affects
    expected = {output for output in before if output & affects}
    if affects & Output.ALL_ROUNDS:
        expected.add(Output.LATER_ROUNDS)  # round 0's settings are every round's
    assert changed == expected


@pytest.mark.parametrize("dotted", [dotted for dotted, key in KEYS.items() if key.inert_while_off])
def test_a_key_changes_nothing_while_its_switch_is_off(dotted: str):
    switch = KEYS[dotted].inert_while_off
    assert switch in KEYS and KEYS[switch].affects == KEYS[dotted].affects
    config = from_dict({"data": {"root": "/frozen/data", "num_classes": 3}})
    config = with_overrides(config, {switch: type(value_of(config, switch))(0)})  # off: 0, or false
    assert value_of(config, switch) == 0
    assert outputs_of(perturbed(config, dotted)) == outputs_of(config)


def test_added_keys_at_their_old_value_are_left_out_of_every_hash():
    added = [dotted for dotted, key in KEYS.items() if key.added is not NOT_ADDED]
    assert "rectify.pseudo_source" in added and "train.snapshots" in added
    config = from_dict({"data": {"root": "/frozen/data", "num_classes": 3}})
    for dotted in added:
        section, name = dotted.split(".")
        old = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section),
                                                                           **{name: KEYS[dotted].added})})
        assert name not in staleness.hashed_settings(old)[section], dotted
