import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cisctool.config import Config, to_dict, with_overrides
from cisctool.data.masks import read_mask
from cisctool.errors import InputError
from cisctool.method.signals import fixed_batches
from cisctool.steps import rectify as rectify_step
from cisctool.steps.rectify import pseudo_inputs_hash, rectify_round
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PIXEL_DTYPES, PseudoLabels, partial_path

from helpers import crash_at


@pytest.fixture
def config(demo_config: Config, trained_workdir: Path, tmp_path: Path) -> Config:
    """The demo config over a private copy of the trained round 0 and its index."""
    workdir = tmp_path / "work"
    shutil.copytree(trained_workdir, workdir)
    return with_overrides(demo_config, {"workdir": str(workdir), "rectify.batch_size": 2})


def stored_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][:] for name in handle}


def test_rectify_writes_a_whole_file_and_a_quality_report(config: Config):
    outcome = rectify_round(config, 1, "cpu")
    layout = RunLayout.of(config)
    assert outcome.path == layout.pseudo(1) and not partial_path(outcome.path).exists()
    with PseudoLabels(outcome.path) as stored:
        assert len(stored) == 6 and stored.done.all()
        assert stored.attrs["round"] == 1 and stored.attrs["guide"] == "nearest"
        for index in range(len(stored)):
            image = stored.image(index)
            assert image.label.shape == tuple(stored.shapes[index])
            assert image.weight.min() >= 0 and image.weight.max() <= 1
            assert set(np.unique(image.raw_label)) <= set(range(6))
    report = outcome.report
    assert report["with_masks"] and 0 <= report["raw_miou"] <= 1
    assert set(report["auroc"]) >= {"confidence", "cisc", "weight_official", "weight_mean"}
    assert layout.pseudo_quality(1).is_file()
    # the labeled masks' class shares, beside the pseudo labels' own (`label_share`)
    counts = np.zeros(6, dtype=np.int64)
    for line in (config.data_root / config.data.labeled).read_text().split():
        if line.startswith("masks/"):
            counts += np.bincount(read_mask(config.data_root / line).ravel(), minlength=256)[:6]
    assert np.allclose(list(report["labeled_share"].values()), counts / counts.sum())
    assert list(report["labeled_share"]) == list(config.class_names)


def test_killed_run_resumes_to_the_same_file(config: Config, tmp_path: Path):
    assert len(fixed_batches(6, 2)) == 3
    calibration = len(fixed_batches(8, 2))  # the labeled images' calibration batches come first
    with crash_at(f"forward:{calibration + 2}"):  # before unlabeled batch 2: batch 1 is written
        rectify_round(config, 1, "cpu")
    final = RunLayout.of(config).pseudo(1)
    assert not final.exists() and partial_path(final).exists()
    with pytest.raises(InputError, match="unfinished .2/6 images done"):
        PseudoLabels(partial_path(final))
    resumed = rectify_round(config, 1, "cpu", resume=True)
    assert resumed.computed == 4
    other = with_overrides(config, {"workdir": str(tmp_path / "other")})
    shutil.copytree(Path(config.workdir), tmp_path / "other")
    shutil.rmtree(RunLayout.of(other).round_dir(1))
    uninterrupted = rectify_round(other, 1, "cpu")
    first, second = stored_arrays(final), stored_arrays(uninterrupted.path)
    assert first.keys() == second.keys() >= set(PIXEL_DTYPES)
    for name in first:
        assert np.array_equal(first[name], second[name], equal_nan=first[name].dtype.kind == "f"), name


def test_a_finished_file_is_kept_without_force(config: Config):
    rectify_round(config, 1, "cpu")
    path = RunLayout.of(config).pseudo(1)
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists; pass --force"):
        rectify_round(config, 1, "cpu")
    assert path.read_bytes() == before
    rectify_round(with_overrides(config, {"rectify.guide": "random"}), 1, "cpu", force=True)
    with PseudoLabels(path) as stored:
        assert stored.attrs["guide"] == "random"


def test_stale_or_missing_index_and_missing_model_are_refused(config: Config):
    layout = RunLayout.of(config)
    with layout.model(0).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(InputError, match="stale"):
        rectify_round(config, 1, "cpu")
    for path in layout.index_files(0):
        path.unlink()
    with pytest.raises(InputError, match="index file not found"):
        rectify_round(config, 1, "cpu")
    with pytest.raises(InputError, match="no model for round 1"):
        rectify_round(config, 2, "cpu")
    assert not layout.pseudo(1).exists()


def test_unlabeled_split_without_masks_reports_without_miou(config: Config, tmp_path: Path):
    root = config.data_root
    images = [line.split()[0] for line in (root / config.data.unlabeled).read_text().splitlines()]
    split = tmp_path / "images_only.txt"
    split.write_text("\n".join(str(root / image) for image in images) + "\n")
    outcome = rectify_round(with_overrides(config, {"data.unlabeled": str(split)}), 1, "cpu")
    assert not outcome.report["with_masks"] and "raw_miou" not in outcome.report
    assert sum(outcome.report["label_share"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("keys", [{"rectify.weight_mode": "mean", "rectify.cisc_min": 0.5},
                                  {"rectify.margin": 0.0, "rectify.p_min": 0.0}])
def test_drop_and_relabel_settings_change_labels_not_raw(config: Config, keys: dict):
    outcome = rectify_round(with_overrides(config, {**keys, "rectify.conf_adaptive": False}), 1, "cpu")
    with PseudoLabels(outcome.path) as stored:
        changed = sum(int((stored.pixels("label", i) != stored.pixels("raw_label", i)).sum()) for i in range(6))
        dropped = sum(int((stored.pixels("label", i) == 255).sum()) for i in range(6))
    if "rectify.cisc_min" in keys:
        assert dropped == changed and outcome.report["dropped_fraction"] > 0
    else:
        assert dropped == 0 and (changed > 0) == (outcome.report["relabeled_fraction"] > 0)


def test_self_training_keeps_argmax_labels_with_unit_weights_and_needs_no_index(config: Config):
    for path in RunLayout.of(config).index_files(0):
        path.unlink()
    outcome = rectify_round(with_overrides(config, {"rectify.enabled": False}), 1, "cpu")
    with PseudoLabels(outcome.path) as stored:
        assert stored.attrs["rectified"] is False or stored.attrs["rectified"] == 0
        for index in range(len(stored)):
            assert np.array_equal(stored.pixels("label", index), stored.pixels("raw_label", index))
            assert (stored.pixels("weight", index) == 1).all() and np.isnan(stored.pixels("cisc", index)).all()
        assert (stored.guides == -1).all() and np.isfinite(stored.reliability).all()
    assert outcome.report["queries"] == {"guided": 0, "fallback": 0, "unguided": 0}


def test_shards_merge_into_the_file_a_single_process_writes(config: Config, tmp_path: Path):
    from cisctool.steps.shards import merge_shards, shard_path

    single = rectify_round(config, 1, "cpu")
    expected = stored_arrays(single.path)
    single.path.rename(tmp_path / "single.h5")
    with pytest.raises(InputError, match="no finished shard files"):
        merge_shards(config, 1)
    rectify_round(config, 1, "cpu", shard=(1, 2))
    with pytest.raises(InputError, match="shard0of2.h5: shard missing"):
        merge_shards(config, 1)
    first = rectify_round(config, 1, "cpu", shard=(0, 2))
    assert first.path == shard_path(RunLayout.of(config).pseudo(1), 0, 2) and first.computed == 2  # batch 0 of 3
    for copy in (False, True):  # virtual datasets over the shards, or every pixel copied
        path = merge_shards(config, 1, copy=copy)
        merged = stored_arrays(path)
        assert merged.keys() == expected.keys()
        for name in merged:
            assert np.array_equal(merged[name], expected[name], equal_nan=merged[name].dtype.kind == "f"), name
        with h5py.File(path, "r") as handle:
            assert handle["label"].is_virtual != copy and handle["done"].is_virtual != copy
    other = with_overrides(config, {"rectify.batch_size": 3})
    rectify_round(other, 1, "cpu", shard=(0, 2), force=True)
    with pytest.raises(InputError, match="made with another batch_size"):
        merge_shards(config, 1)


def test_a_finished_shard_of_the_same_inputs_is_kept_under_resume(config: Config):
    first = rectify_round(config, 1, "cpu", shard=(1, 2))
    assert first.computed == 4  # batches 1 and 2 of 3
    before = first.path.stat()
    again = rectify_round(config, 1, "cpu", shard=(1, 2), resume=True)  # as each rank of torchrun --resume
    after = first.path.stat()
    assert again.computed == 0 and again.path == first.path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert again.report["raw_miou"] == first.report["raw_miou"]
    forced = rectify_round(config, 1, "cpu", shard=(1, 2), resume=True, force=True)  # torchrun passes force
    assert forced.computed == 0 and first.path.stat().st_ino == before.st_ino
    other = with_overrides(config, {"rectify.guide": "random"})  # other inputs: refused, or recomputed
    with pytest.raises(InputError, match="already exists; pass --force"):
        rectify_round(other, 1, "cpu", shard=(1, 2), resume=True)
    assert rectify_round(other, 1, "cpu", shard=(1, 2), resume=True, force=True).computed == 4
    with PseudoLabels(first.path, require_complete=False) as stored:
        assert stored.attrs["guide"] == "random"


def test_a_rectify_key_added_later_hashes_as_before_at_its_old_behaviour(demo_config: Config):
    demo_config = with_overrides(demo_config, {"rectify.conf_adaptive": False})  # as before the key existed
    values = to_dict(demo_config)  # the hash as written before `rectify.reliability` existed
    before = {key: values[key] for key in ("data", "model", "index", "rectify")}
    before["seed"] = values["train"]["seed"]
    before["model"] = {key: value for key, value in before["model"].items()
                       if key not in ("decoder_stride", "gradient_checkpointing")}  # added later too
    before["rectify"] = {key: value for key, value in before["rectify"].items()
                         if key not in ("select", "ratio", "batch_size", "reliability",
                                        "prior_alignment", "pseudo_source", "conf_adaptive")}  # fmt: skip
    old_hash = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()
    assert pseudo_inputs_hash(with_overrides(demo_config, {"rectify.reliability": "cisc"})) == old_hash
    assert pseudo_inputs_hash(with_overrides(demo_config, {"rectify.reliability": "cisc+confidence"})) != old_hash
    assert pseudo_inputs_hash(with_overrides(demo_config, {"rectify.prior_alignment": 0.0})) == old_hash
    assert pseudo_inputs_hash(with_overrides(demo_config, {"rectify.prior_alignment": 1.0})) != old_hash
    assert pseudo_inputs_hash(with_overrides(demo_config, {"rectify.conf_adaptive": False})) == old_hash
    assert pseudo_inputs_hash(with_overrides(demo_config, {"rectify.conf_adaptive": True})) != old_hash


def test_a_resumed_run_aligns_and_thresholds_as_its_file_was_started(
    config: Config, monkeypatch: pytest.MonkeyPatch
):
    aligned = with_overrides(config, {"rectify.prior_alignment": 1.0, "rectify.conf_adaptive": True})
    calibration = len(fixed_batches(8, 2))
    with crash_at(f"forward:{calibration + 2}"):  # batch 1 of 3 is written
        rectify_round(aligned, 1, "cpu")
    with h5py.File(partial_path(RunLayout.of(aligned).pseudo(1)), "r") as handle:
        started = {key: json.loads(handle.attrs[key]) for key in ("prior_alignment", "adaptive_thresholds")}
    assert started["prior_alignment"]["strength"] == 1.0 and started["prior_alignment"]["classes"]
    assert started["adaptive_thresholds"]["classes"]

    def recompute(*_args, **_kwargs):
        raise AssertionError("p̄ recomputed on resume")

    monkeypatch.setattr(rectify_step, "sample_statistics", recompute)
    resumed = rectify_round(aligned, 1, "cpu", resume=True)
    assert resumed.computed == 4
    with PseudoLabels(resumed.path) as stored:
        for key, described in started.items():
            assert resumed.report[key] == described and json.loads(stored.attrs[key]) == described


def test_adaptive_thresholds_ignore_the_pixels_under_their_class_threshold(config: Config, tmp_path: Path):
    plain = rectify_round(with_overrides(config, {"rectify.conf_adaptive": False}), 1, "cpu")
    adaptive_config = with_overrides(config, {"rectify.conf_adaptive": True, "workdir": str(tmp_path / "adaptive")})
    shutil.copytree(Path(config.workdir), tmp_path / "adaptive")
    shutil.rmtree(RunLayout.of(adaptive_config).round_dir(1))
    adaptive = rectify_round(adaptive_config, 1, "cpu")
    described = adaptive.report["adaptive_thresholds"]
    means = np.array([described["classes"][name]["mean_prediction"] for name in config.class_names])
    thresholds = np.array([described["classes"][name]["threshold"] for name in config.class_names])
    assert means.sum() == pytest.approx(1.0) and described["sample_images"] == 6
    assert np.allclose(thresholds, described["mean_confidence"] * means / means.max())
    assert thresholds.max() == pytest.approx(described["mean_confidence"]) and thresholds.min() < thresholds.max()
    assert "adaptive_thresholds" not in plain.report
    ignore, classes = config.data.ignore_index, np.arange(len(thresholds))
    dropped = kept = 0
    with PseudoLabels(plain.path) as before, PseudoLabels(adaptive.path) as after:
        for position in range(len(before)):
            old, new = before.image(position), after.image(position)
            assert np.array_equal(old.raw_label, new.raw_label)
            predicted = np.isin(old.raw_label, classes)
            floor = thresholds[np.where(predicted, old.raw_label, 0)]  # confidence is stored as float16
            under = predicted & (old.confidence.astype(np.float64) < floor - 1e-3)
            over = predicted & (old.confidence.astype(np.float64) > floor + 1e-3)
            assert (new.label[under] == ignore).all()
            assert np.array_equal(new.label[over], old.label[over])
            dropped, kept = dropped + int(under.sum()), kept + int(over.sum())
    assert dropped > 0 and kept > dropped


def test_prior_alignment_biases_the_labels_by_the_factors_it_reports(config: Config, tmp_path: Path):
    unaligned = rectify_round(config, 1, "cpu")
    aligned_dir = tmp_path / "aligned"
    aligned_config = with_overrides(config, {"rectify.prior_alignment": 1.0, "workdir": str(aligned_dir)})
    shutil.copytree(Path(config.workdir), aligned_dir)
    shutil.rmtree(RunLayout.of(aligned_config).round_dir(1))
    aligned = rectify_round(aligned_config, 1, "cpu")
    described = aligned.report["prior_alignment"]
    classes = described["classes"]
    assert described["strength"] == 1.0 and list(classes) == list(config.class_names)
    shares = np.array([classes[name]["labeled_share"] for name in config.class_names])
    means = np.array([classes[name]["mean_prediction"] for name in config.class_names])
    factors = np.array([classes[name]["weight"] for name in config.class_names])  # "weight" holds the factor
    assert np.allclose(shares, list(unaligned.report["labeled_share"].values()))
    assert means.sum() == pytest.approx(1.0) and factors.max() > factors.min()
    assert np.allclose(factors[shares > 0], (shares / means)[shares > 0])
    assert unaligned.report["prior_alignment"] == {"strength": 0.0, "sample_images": 0, "classes": {}}
    assert described["sample_images"] == 6  # the whole unlabeled split: fewer images than the sample
    with PseudoLabels(aligned.path) as stored:
        assert json.loads(stored.attrs["prior_alignment"]) == described
        raw = np.concatenate([stored.image(position).raw_label.ravel() for position in range(len(stored))])
    with PseudoLabels(unaligned.path) as stored:
        unaligned_raw = np.concatenate([stored.image(position).raw_label.ravel() for position in range(len(stored))])
    boosted = factors > 1
    assert not np.array_equal(raw, unaligned_raw)
    assert np.isin(raw, np.flatnonzero(boosted)).sum() > np.isin(unaligned_raw, np.flatnonzero(boosted)).sum()
