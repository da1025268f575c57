"""Which outputs each config key makes stale: the one table every hash, signature and check reads.

A finished output records what it was made from: a training state its signature, a pseudo-label file
its inputs hash, an index its factory and min_area. A later command redoes an output only where a key
that output reads has changed, so every key is classified here (a test fails on a key that is not):

- `ALL_ROUNDS`: every round's training (round 0's, and so every later round's too);
- `LATER_ROUNDS`: the training of rounds ≥ 1 only (the schedule, the rounds' budget and rate);
- `INDEX`: the prototype index (its metadata holds the value under the field's name);
- `PSEUDO`: the pseudo labels (their inputs hash);
- `PSEUDO_RESUME`: not the finished pseudo labels, but an unfinished file (or a shard) continues,
  or joins the others, only at the same value;
- none: never stale (workers, logging, devices, evaluation: they change no stored result).

A key may also be inert while a switch is off (it refines the switch and changes nothing while the
switch is 0: left out then), and may have been added after runs were written: at the value that
behaves as before it existed, every hash leaves it out, so upgrading cisctool does not make finished
work look stale.
"""

import enum
from dataclasses import dataclass
from typing import Any

from cisctool.config import Config, to_dict


class Output(enum.Flag):
    """What a key makes stale (see the module's docstring)."""

    NEVER = 0
    ALL_ROUNDS = enum.auto()
    LATER_ROUNDS = enum.auto()
    INDEX = enum.auto()
    PSEUDO = enum.auto()
    PSEUDO_RESUME = enum.auto()


NOT_ADDED = object()  # a key that was there when the first runs were written


@dataclass(frozen=True)
class Key:
    """One config key's row: what it makes stale, the switch it refines, its before-it-existed value."""

    affects: Output
    inert_while_off: str = ""  # "section.key" of the switch
    added: Any = NOT_ADDED


NEVER, ALL_ROUNDS, LATER_ROUNDS = Output.NEVER, Output.ALL_ROUNDS, Output.LATER_ROUNDS
INDEX, PSEUDO, PSEUDO_RESUME = Output.INDEX, Output.PSEUDO, Output.PSEUDO_RESUME
TRAINED = ALL_ROUNDS | PSEUDO  # what the model computes from: its training and its predictions

KEYS: dict[str, Key] = {
    "name": Key(NEVER),  # names the run folder; the folder, not a hash, tells runs apart
    "dataset": Key(NEVER),  # a preset: the data keys it fills are hashed themselves
    "profile": Key(NEVER),  # likewise: the keys it sets are hashed themselves
    "workdir": Key(NEVER),
    **{f"data.{key}": Key(TRAINED) for key in
       ("root", "num_classes", "labeled", "unlabeled", "val", "ignore_index", "class_names")},
    **{f"model.{key}": Key(TRAINED) for key in ("arch", "backbone", "pretrained", "output_stride", "head_channels")},
    "model.decoder_stride": Key(TRAINED, added=4),
    "model.gradient_checkpointing": Key(TRAINED, added=False),  # the same numbers; hashed since it was added
    **{f"train.{key}": Key(ALL_ROUNDS) for key in
       ("epochs", "max_steps", "optimizer", "batch_size", "lr", "head_lr_mult", "momentum", "weight_decay",
        "warmup_ratio", "crop_size", "scale_min", "scale_max", "consistency_weight", "sync_bn")},
    "train.seed": Key(TRAINED),  # the pseudo labels' sample for prior alignment is drawn from it
    "train.consistency_rampup": Key(ALL_ROUNDS, inert_while_off="train.consistency_weight", added=0.0),
    "train.ohem_threshold": Key(ALL_ROUNDS, added=0.0),
    "train.ohem_min_kept": Key(ALL_ROUNDS, inert_while_off="train.ohem_threshold", added=0.15),
    **{f"train.{key}": Key(NEVER) for key in ("amp", "channels_last", "workers", "log_every", "checkpoint_every")},
    "train.snapshots": Key(NEVER, added=0),  # extra files beside the model; the weights are the same
    **{f"train.{key}": Key(LATER_ROUNDS) for key in
       ("pseudo_batch_size", "round_max_steps", "round_epochs", "init")},
    "train.round_batch_size": Key(LATER_ROUNDS, added=0),
    "train.pseudo_class_balance": Key(LATER_ROUNDS, added=0.0),
    "train.round_lr": Key(LATER_ROUNDS),  # hashed as the rate it gives (`hashed_settings`)
    "train.round_lr_mult": Key(LATER_ROUNDS, added=1.0),  # hashed through `train.round_lr`'s rate
    **{f"eval.{key}": Key(NEVER) for key in ("mode", "batch_size", "crop_size", "stride")},
    "index.factory": Key(INDEX | PSEUDO),
    "index.min_area": Key(ALL_ROUNDS | INDEX | PSEUDO),  # which labeled classes the guides and CutMix see
    "index.topk": Key(PSEUDO),
    "index.use_gpu": Key(PSEUDO),  # the same search; in the pseudo labels' hash since its first version
    **{f"rectify.{key}": Key(PSEUDO) for key in
       ("enabled", "tta", "tta_scales", "tta_flip", "guide", "weight_mode", "margin", "p_min", "cisc_min",
        "conf_min")},
    "rectify.prior_alignment": Key(PSEUDO, added=0.0),
    "rectify.conf_adaptive": Key(PSEUDO, inert_while_off="rectify.enabled", added=False),  # CISC-R's, not ST's
    "rectify.reliability": Key(PSEUDO, added="cisc"),
    "rectify.pseudo_source": Key(PSEUDO, added="prediction"),
    "rectify.guide_exclude": Key(ALL_ROUNDS | PSEUDO),  # CutMix's pasted classes follow the guides'
    "rectify.batch_size": Key(PSEUDO_RESUME),  # fixes each image's padding
    "rectify.select": Key(LATER_ROUNDS),  # which pseudo-labeled images a round trains on
    "rectify.ratio": Key(LATER_ROUNDS),
}  # fmt: skip

# The pseudo-label file's attributes that say what it was made from: a finished file is current while
# these match; an unfinished file (or a shard) resumes, or joins the others, only while the resume ones
# match too (the TTA description and the `PSEUDO_RESUME` keys, under their field names).
PSEUDO_CURRENT_ATTRS = ("checkpoint_sha256", "index_sha256", "inputs_hash")
PSEUDO_RESUME_ATTRS = (
    *PSEUDO_CURRENT_ATTRS, "tta", *(dotted.split(".")[1] for dotted, key in KEYS.items() if PSEUDO_RESUME & key.affects)
)  # fmt: skip


def keys_affecting(output: Output) -> list[str]:
    """The dotted keys that make `output` stale, in the table's order."""
    return [dotted for dotted, key in KEYS.items() if output & key.affects]


def value_of(config: Config, dotted: str) -> Any:
    """A dotted key's value in `config`."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def added_at_old_value(dotted: str, value: Any) -> bool:
    """Whether a key added later holds the value that behaves as before it existed."""
    added = KEYS[dotted].added
    return added is not NOT_ADDED and added == value


def hashed_settings(config: Config) -> dict[str, Any]:
    """`to_dict` without the added keys that hold their before-they-existed value: what hashes of
    finished work are computed from, so every such hash treats added keys alike.

    Rounds ≥ 1's rate is hashed as the rate it is (`TrainConfig.rate`), 0 where it is round 0's:
    `round_lr = 0.002` and `round_lr_mult = 0.2` at `lr = 0.01` train alike and hash alike, and a
    run written before `round_lr_mult` existed (`round_lr` 0 = round 0's rate) keeps its hash."""
    values = to_dict(config)
    rate = config.train.rate(1)
    values["train"]["round_lr"] = 0.0 if rate == config.train.lr else rate
    del values["train"]["round_lr_mult"]
    for section, table in values.items():
        if isinstance(table, dict):
            values[section] = {key: value for key, value in table.items()
                               if not added_at_old_value(f"{section}.{key}", value)}  # fmt: skip
    return values


def training_keys(config: Config, round_index: int) -> set[str]:
    """The keys round N's training reads: round 0's, the later rounds' from round 1 on, less those
    inert while their switch is off."""
    wanted = ALL_ROUNDS | (LATER_ROUNDS if round_index else NEVER)
    return {dotted for dotted, key in KEYS.items() if wanted & key.affects and not inert(config, dotted)}


def inert(config: Config, dotted: str) -> bool:
    """Whether the key changes nothing in `config` because its switch is off."""
    switch = KEYS[dotted].inert_while_off
    return bool(switch) and value_of(config, switch) == 0


def hashed_values(
    config: Config, keys: set[str] | list[str], sections: tuple[str, ...], groups: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """`keys`' hashed values laid out as a hash has always read them: a key of one of `sections` in its
    section's table, a key of a group in that group's list (in the group's order), any other under its
    field name; a key that `hashed_settings` leaves out is left out."""
    values = hashed_settings(config)
    laid_out: dict[str, Any] = {section: {} for section in sections}
    grouped = {dotted for members in groups.values() for dotted in members}
    for dotted in keys:
        section, _, name = dotted.rpartition(".")
        if dotted in grouped or name not in values.get(section, {}):
            continue
        target = laid_out[section] if section in sections else laid_out
        target[name] = values[section][name]
    for group, members in groups.items():
        present = [values[dotted.split(".")[0]][dotted.split(".")[1]] for dotted in members if dotted in keys]
        if present:
            laid_out[group] = present
    return laid_out


def index_settings(config: Config) -> dict[str, Any]:
    """The `INDEX` keys' values by field name: what an index's metadata must hold to be current."""
    return {dotted.split(".")[1]: value_of(config, dotted) for dotted in keys_affecting(INDEX)}


def pseudo_resume_settings(config: Config) -> dict[str, Any]:
    """The `PSEUDO_RESUME` keys' values by field name, as the pseudo-label file records them."""
    return {dotted.split(".")[1]: value_of(config, dotted) for dotted in keys_affecting(PSEUDO_RESUME)}
