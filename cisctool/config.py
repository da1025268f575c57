"""TOML configuration → frozen dataclasses, with presets, CLI overrides and validation.

Every key has a default except `data.root` and `data.num_classes` (a preset
such as `dataset = "voc"` fills the latter). Unknown keys are an error that
names the key and lists the valid ones, so a typo never silently falls back
to a default. The resolved configuration is written beside each run's outputs
(`to_toml`) and hashed (`config_hash`) to tell stale artifacts.
"""

import dataclasses
import hashlib
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cisctool.errors import InputError

# Every choice list, defined once: config validation and the command line's choices derive from these.
Arch = Literal["deeplabv3plus"]
Backbone = Literal["resnet50", "resnet101", "mobilenetv2", "tiny", "dinov2_small", "dinov2_base", "dinov2_large"]
Optimizer = Literal["sgd", "adamw"]
Init = Literal["scratch", "previous"]  # rounds ≥ 1 start from ImageNet/random or from round N−1's model
EvalMode = Literal["whole", "slide"]
UseGpu = Literal["auto", "true", "false"]
Guide = Literal["nearest", "random"]  # nearest: top-k same-class prototypes; random: the official code
WeightMode = Literal["official", "mean", "confidence"]
# rounds that train on the reliable part: "reliable" round 1 only (the papers), "reliable-always" every round
Select = Literal["reliable", "reliable-always", "all"]
# the image score the reliable part is chosen by: the paper's mean BCE of S_ŷ towards 1, or that plus the mean
# −log confidence (self-training's score), both over the image's pixels; or ST++'s "stability": 1 − the mean
# IoU between the earlier snapshots' predictions (`train.snapshots`) and the model's; lower = more reliable always
Reliability = Literal["cisc", "cisc+confidence", "stability"]
# what the pseudo labels are: the model's predictions, or the unlabeled split's true masks (the oracle)
PseudoSource = Literal["prediction", "masks"]
Compression = Literal["lzf", "gzip", "none"]  # of the pseudo-label file's pixel datasets
ReviewFormat = Literal["labelstudio", "cvat"]  # annotation tools pseudo labels go to and corrections come from


def choices(kind: Any) -> tuple[str, ...]:
    """The values of a choice list (a `Literal` type above), in their order."""
    return typing.get_args(kind)
from cisctool.presets import PRESETS


@dataclass(frozen=True)
class DataConfig:
    """Where the images, masks and split files are; class count and names."""

    root: str = ""
    num_classes: int = 0
    labeled: str = "splits/labeled.txt"
    unlabeled: str = "splits/unlabeled.txt"
    val: str = "splits/val.txt"
    ignore_index: int = 255
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """Segmenter: DeepLabV3+ on a CNN backbone, or UniMatch V2's DPT head on a DINOv2 ViT
    (`backbone = "dinov2_small" | "dinov2_base" | "dinov2_large"`, which always take the DPT head,
    whatever `arch`); `pretrained` is a local ImageNet file, or an official DINOv2 file for a ViT.

    `head_channels` is the ASPP/decoder width (DPT: the fusion width; UniMatch V2 uses 64, 128,
    256 for small, base, large), hence the CISC feature dim D.
    `decoder_stride` 4 predicts at DeepLabV3+'s stride; 2 adds a stage on the backbone's
    stride-2 features for classes thinner than 4 px (the CISC features stay at stride 4).
    `output_stride` and `decoder_stride` are DeepLabV3+'s; a ViT works at patch stride 14.
    `gradient_checkpointing` (ViTs) recomputes each block's activations in the backward pass:
    less training memory for more compute, the same numbers.
    """

    arch: Arch = "deeplabv3plus"
    backbone: Backbone = "resnet50"
    pretrained: str = ""
    output_stride: int = 16
    head_channels: int = 256
    decoder_stride: int = 4
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """SGD (or AdamW) with linear warm-up then poly decay; `batch_size` counts images per step.

    The budget is in epochs, so a config copied to a bigger or smaller data set scales
    with it: round 0 runs `epochs` passes over the labeled pairs (`max_steps` overrides).
    Rounds ≥ 1 draw `round_batch_size` labeled images per step (0 = batch_size), add
    `pseudo_batch_size` pseudo-labeled images (0 = batch_size)
    and run `round_epochs` passes over the round's selected pseudo-labeled images
    (`round_max_steps` overrides; both 0 = as round 0), starting from `init`: "previous"
    (round N−1's model) or "scratch" (ImageNet or random, as round 0). Continuing wants a
    fine-tuning rate (a converged model restarted at round 0's rate can diverge): rounds ≥ 1
    run at `round_lr_mult` × `lr`, or at `round_lr` where that is set (> 0). The defaults
    (previous, 5 passes, 0.2 × lr) are the recipe both benchmarks chose over the paper's
    (scratch at round 0's budget and rate: the `official` profile); docs/baselines.md.
    `snapshots` = K > 0 also keeps the model at 1/(K+1), …, K/(K+1) of each round's steps,
    for ST++'s image selection by prediction stability (`rectify.reliability = "stability"`).
    `warmup_ratio` of each round's steps ramps the rate linearly from 0;
    `consistency_rampup` of them ramps λ (`consistency_weight`) up as exp(−5(1−t)²).
    `ohem_threshold` > 0 trains the labeled CE on hard pixels only (true-class probability
    ≤ it, at least the `ohem_min_kept` share of them), as mmsegmentation's and UniMatch's
    Cityscapes configs do (0.7); 0 = plain CE.
    `pseudo_class_balance` = τ > 0 scales each pseudo-labeled pixel's loss weight by the class
    factor (π_c / q_c)^τ of its label c: π the labeled masks' class shares, q the class shares of the
    round's pseudo loss (its pixels' weights summed per label), so a class the pseudo labels
    hold less of than the labeled masks counts for more without any label changing (at τ = 1
    each class's share of the pseudo loss becomes its labeled share).
    `lr` = 0.01 is the rate the benchmarks train an ImageNet backbone at, batch 8 (0.001 left a
    config of only [data] and [model] 12 points under theirs on the demo); the presets pin the
    field's rates (VOC 0.001, Cityscapes and COCO 0.004); docs/baselines.md.
    `workers` decode and augment beside a GPU; on a CPU, loaders get only the cores
    torch's own threads leave free (OMP_NUM_THREADS below the core count frees some).
    """

    epochs: int = 80
    max_steps: int = 0
    optimizer: Optimizer = "sgd"
    batch_size: int = 8
    lr: float = 0.01
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    crop_size: int = 321
    scale_min: float = 0.5
    scale_max: float = 2.0
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    workers: int = 4
    consistency_weight: float = 0.0
    consistency_rampup: float = 0.0
    ohem_threshold: float = 0.0
    ohem_min_kept: float = 0.15
    log_every: int = 10
    checkpoint_every: int = 100
    pseudo_batch_size: int = 0
    round_batch_size: int = 0
    pseudo_class_balance: float = 0.0
    round_max_steps: int = 0
    round_epochs: float = 5.0
    round_lr: float = 0.0
    round_lr_mult: float = 0.2
    init: Init = "previous"
    snapshots: int = 0
    sync_bn: bool = False

    def rate(self, round_index: int) -> float:
        """The base learning rate of round N: `lr` in round 0; `round_lr`, or else `round_lr_mult` × `lr`,
        later. Rounded to 12 significant digits, so 0.2 × 0.01 is the 0.002 a config would write."""
        if round_index == 0:
            return self.lr
        return self.round_lr if self.round_lr > 0 else float(f"{self.lr * self.round_lr_mult:.12g}")


@dataclass(frozen=True)
class EvalConfig:
    """Validation inference: `whole` image or `slide` window (crop_size, stride)."""

    mode: EvalMode = "whole"
    batch_size: int = 8
    crop_size: int = 513
    stride: int = 341


@dataclass(frozen=True)
class IndexConfig:
    """FAISS index of labeled-image class prototypes."""

    factory: str = "Flat"
    min_area: float = 0.03
    topk: int = 1
    use_gpu: UseGpu = "auto"


@dataclass(frozen=True)
class RectifyConfig:
    """Pseudo-label rectification by cross-image semantic consistency.

    `enabled = false` is self-training (ST, the baseline): argmax labels, weight 1, no CISC, no index;
    with `conf_min` = τ > 0 it is confidence-thresholded self-training (FixMatch, UniMatch).
    `conf_adaptive` (the default where rectification is on; the official profile turns it off)
    adds FreeMatch's self-adaptive class thresholds τ_c = τ̄ · p̄_c / max p̄ (τ̄ the mean confidence,
    p̄ the mean prediction over a fixed sample of the unlabeled images): a pixel predicted as c
    under τ_c is ignored, the kept pixels keep their CISC weights. Against CISC-R without them, same
    round 0: +0.62 ± 0.46 demo (4/5 seeds), +0.81 ± 0.52 aerial (5/5).
    `pseudo_source = "masks"` trains on the unlabeled split's true masks instead (the oracle).
    Pseudo labels average the softmax over `tta_scales` × (`tta_flip`: plain and mirrored
    views); the default, the plain view and a 1.5× up-scaled one, is what both benchmarks
    chose at 2 forward passes an image (the official five scales × flip cost 10 and more:
    the `official` profile); `tta = false` uses the plain view.
    `prior_alignment = τ > 0` scales those probabilities by (π_c / p̄_c)^τ before anything reads
    them (ReMixMatch's distribution alignment): π the labeled masks' class shares, p̄ the mean
    prediction over a fixed sample of the unlabeled images.
    """

    enabled: bool = True
    batch_size: int = 16
    tta: bool = True
    tta_scales: tuple[float, ...] = (1.0, 1.5)
    tta_flip: bool = False
    prior_alignment: float = 0.0
    guide: Guide = "nearest"
    weight_mode: WeightMode = "official"
    guide_exclude: tuple[int, ...] = ()
    margin: float = math.inf
    p_min: float = 0.2
    cisc_min: float = -1.0
    conf_min: float = 0.0
    conf_adaptive: bool = True
    select: Select = "reliable"
    reliability: Reliability = "cisc"
    ratio: float = 0.5
    pseudo_source: PseudoSource = "prediction"


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration; `source` is the file it was read from."""

    name: str = "default"
    dataset: str = ""
    profile: str = "default"
    workdir: str = "."
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    rectify: RectifyConfig = field(default_factory=RectifyConfig)
    source: str = field(default="", compare=False)

    @property
    def data_root(self) -> Path:
        """`data.root`; `load_config` has made a relative one relative to the config file."""
        return Path(self.data.root)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, `class_<i>` where the config names none."""
        if self.data.class_names:
            return self.data.class_names
        return tuple(f"class_{index}" for index in range(self.data.num_classes))


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "index": IndexConfig,
    "rectify": RectifyConfig,
}
TOP_LEVEL_KEYS = ("name", "dataset", "profile", "workdir")
# Official: the paper's five scales × flip (the package default is what the benchmarks chose).
OFFICIAL_TTA_SCALES = [0.5, 0.75, 1.0, 1.5, 2.0]


# `profile = "official"`: the paper's code choices in one switch. It overrides the file's keys
# (so a config tuned otherwise still reproduces the paper); `--set` overrides it.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "official": {
        "train": {"consistency_weight": 1.0, "consistency_rampup": 0.0, "ohem_threshold": 0.0, "init": "scratch",
                  "round_lr": 0.0, "round_lr_mult": 1.0, "round_max_steps": 0, "round_epochs": 0.0,
                  "round_batch_size": 0, "pseudo_class_balance": 0.0, "snapshots": 0},
        "rectify": {"guide": "random", "weight_mode": "official", "tta": True, "tta_scales": OFFICIAL_TTA_SCALES,
                    "tta_flip": True, "prior_alignment": 0.0, "conf_adaptive": False, "select": "reliable",
                    "reliability": "cisc", "ratio": 0.5, "pseudo_source": "prediction"},
    },
}  # fmt: skip


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML file (or none: defaults), apply its preset, then dotted CLI overrides."""
    raw: dict[str, Any] = {}
    label = "configuration"
    if path is not None:
        label = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not valid TOML ({error})") from None
    config = from_dict(_with_profile(raw, overrides or {}), label)
    root = Path(config.data.root).expanduser()
    if path is not None and not root.is_absolute():
        root = Path(path).resolve().parent / root
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, root=str(root)),
        source=str(Path(path).resolve()) if path else "",
    )


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of `config` with dotted keys replaced and validated again (keeps `source`)."""
    raw = to_dict(config)
    if "profile" not in overrides:  # the resolved values already hold the profile and earlier overrides
        for dotted, value in overrides.items():
            _set_dotted(raw, dotted, value)
    else:
        raw = _with_profile(raw, overrides)
    return dataclasses.replace(from_dict(raw, config.source or "configuration"), source=config.source)


def _with_profile(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """File keys, then the chosen profile's keys over them, then the dotted overrides over both."""
    name = overrides.get("profile", raw.get("profile", "default"))
    raw = _merge(raw, PROFILES.get(name, {}))  # an unknown name is refused by `from_dict`
    for dotted, value in overrides.items():
        _set_dotted(raw, dotted, value)
    return raw


def from_dict(raw: dict[str, Any], label: str = "configuration") -> Config:
    """Validate a nested dict (TOML tables) into a Config; errors name `label` and the key."""
    raw = dict(raw)
    preset_name = raw.get("dataset", "")
    if preset_name:
        if preset_name not in PRESETS:
            valid = ", ".join(sorted(PRESETS))
            raise InputError(f"{label}: unknown dataset preset {preset_name!r}; valid: {valid}")
        raw = _merge(PRESETS[preset_name], raw)
    raw = _background_unguided(raw)
    for key in raw:
        if key not in SECTIONS and key not in TOP_LEVEL_KEYS:
            valid = ", ".join([*TOP_LEVEL_KEYS, *(f"[{name}]" for name in SECTIONS)])
            raise InputError(f"{label}: unknown key {key!r}; valid top-level keys: {valid}")
    top = {key: _coerce(label, key, str, raw[key]) for key in TOP_LEVEL_KEYS if key in raw}
    if top.get("profile", "default") not in PROFILES:
        raise InputError(f"{label}: profile = {top['profile']!r} is not one of {', '.join(PROFILES)}")
    sections = {}
    for name, section_type in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise InputError(f"{label}: [{name}] must be a table")
        sections[name] = _build_section(label, name, section_type, table)
    config = Config(**top, **sections)
    _validate(label, config)
    return config


def _background_unguided(raw: dict[str, Any]) -> dict[str, Any]:
    """Without `rectify.guide_exclude`, a class named "background" gets no guide, as in the official code.

    A background class is everything that is not an object: no one labeled image's background says
    what another's looks like, so guiding it is noise (VOC, COCO, the demo). Data with no class of
    that name (Cityscapes) guide every class; an explicit list, empty included, always wins.
    """
    rectify, names = raw.get("rectify", {}), raw.get("data", {}).get("class_names", [])
    if not isinstance(rectify, dict) or "guide_exclude" in rectify or not isinstance(names, list):
        return raw
    background = [index for index, name in enumerate(names) if str(name).strip().lower() == "background"]
    return _merge(raw, {"rectify": {"guide_exclude": background}}) if background else raw


def _build_section(label: str, section: str, section_type: type, table: dict[str, Any]) -> Any:
    fields = {item.name: item for item in dataclasses.fields(section_type)}
    hints = typing.get_type_hints(section_type)
    values = {}
    for key, value in table.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise InputError(
                f"{label}: unknown key '{section}.{key}'; valid keys in [{section}]: {valid}"
            )
        values[key] = _coerce(label, f"{section}.{key}", hints[key], value)
    return section_type(**values)


def _coerce(label: str, key: str, hint: Any, value: Any) -> Any:
    """Check a TOML value against a field's type; ints are accepted where floats are."""
    if typing.get_origin(hint) is Literal:
        text = str(value).lower() if isinstance(value, bool) else value
        if text not in choices(hint):
            raise InputError(f"{label}: {key} = {value!r} is not one of {', '.join(choices(hint))}")
        return text
    if typing.get_origin(hint) is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{label}: {key} must be a list, got {type(value).__name__}")
        return tuple(_coerce(label, key, item_type, item) for item in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, bool):
        return str(value).lower()
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        expected = getattr(hint, "__name__", str(hint))
        raise InputError(
            f"{label}: {key} must be {expected}, got {type(value).__name__} ({value!r})"
        )
    return value


def _validate(label: str, config: Config) -> None:
    if not config.data.root:
        raise InputError(f"{label}: data.root is required (the folder the split paths start from)")
    if config.data.num_classes < 1:
        raise InputError(f"{label}: data.num_classes is required and must be ≥ 1")
    if config.data.num_classes >= config.data.ignore_index:
        raise InputError(f"{label}: data.num_classes must be below data.ignore_index")
    names = config.data.class_names
    if names and len(names) != config.data.num_classes:
        raise InputError(
            f"{label}: data.class_names has {len(names)} names for "
            f"data.num_classes = {config.data.num_classes}"
        )
    positive = {
        "train.batch_size": config.train.batch_size,
        "train.crop_size": config.train.crop_size,
        "eval.batch_size": config.eval.batch_size,
        "rectify.batch_size": config.rectify.batch_size,
        "index.topk": config.index.topk,
    }
    for key, value in positive.items():
        if value < 1:
            raise InputError(f"{label}: {key} must be ≥ 1, got {value}")
    if config.train.epochs < 1 and config.train.max_steps < 1:
        raise InputError(f"{label}: train.epochs or train.max_steps must be ≥ 1")
    if not 0 < config.train.scale_min <= config.train.scale_max:
        raise InputError(f"{label}: train.scale_min must be > 0 and ≤ train.scale_max")
    if not 0 <= config.train.warmup_ratio < 1:
        raise InputError(f"{label}: train.warmup_ratio must be in [0, 1), got {config.train.warmup_ratio}")
    for key in ("consistency_rampup", "ohem_threshold", "ohem_min_kept"):
        if not 0 <= getattr(config.train, key) <= 1:
            raise InputError(f"{label}: train.{key} must be in [0, 1], got {getattr(config.train, key)}")
    for key in ("round_epochs", "pseudo_batch_size", "round_batch_size", "pseudo_class_balance", "round_lr",
                "round_lr_mult", "snapshots"):
        if getattr(config.train, key) < 0:
            raise InputError(f"{label}: train.{key} must be ≥ 0, got {getattr(config.train, key)}")
    if config.train.round_lr == 0 and config.train.round_lr_mult == 0:
        raise InputError(
            f"{label}: train.round_lr_mult must be > 0 where train.round_lr is 0 (rounds ≥ 1 would not learn)"
        )
    if config.rectify.reliability == "stability" and config.train.snapshots < 1:
        raise InputError(f'{label}: rectify.reliability = "stability" needs train.snapshots ≥ 1 (earlier models to '
                         "compare the predictions of)")
    if not config.rectify.tta_scales or min(config.rectify.tta_scales) <= 0:
        raise InputError(f"{label}: rectify.tta_scales must be a non-empty list of positive scales")
    if not 0 <= config.rectify.prior_alignment < math.inf:
        strength = config.rectify.prior_alignment
        raise InputError(f"{label}: rectify.prior_alignment must be ≥ 0, got {strength}")
    if config.eval.stride < 1 or config.eval.stride > config.eval.crop_size:
        raise InputError(f"{label}: eval.stride must be in [1, eval.crop_size]")


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, key = dotted.split(".")
    target = raw
    for table in tables:
        target = target.setdefault(table, {})
    target[key] = value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def to_dict(config: Config) -> dict[str, Any]:
    """Nested plain dict of the resolved config (no `source`), for checkpoints and TOML."""
    result: dict[str, Any] = {key: getattr(config, key) for key in TOP_LEVEL_KEYS}
    for name in SECTIONS:
        result[name] = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(getattr(config, name)).items()
        }
    return result


def to_toml(config: Config) -> str:
    """The resolved config as TOML text (readable back by `load_config`)."""
    values = to_dict(config)
    lines = [f"{key} = {_toml_value(values[key])}" for key in TOP_LEVEL_KEYS]
    for name in SECTIONS:
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in values[name].items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def config_hash(config: Config) -> str:
    """sha256 of the resolved TOML text: two runs with equal hashes used equal settings."""
    return hashlib.sha256(to_toml(config).encode()).hexdigest()

