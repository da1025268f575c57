import json
import math

import pytest
import torch

from cisctool import config as config_module
from cisctool.config import with_overrides
from cisctool.errors import InputError
from cisctool.method.losses import masked_cross_entropy
from cisctool.steps import train_data
from cisctool.steps.train import build_optimizer, consistency_ramp, scheduled_lr, train_and_evaluate, train_round
from cisctool.store.checkpoints import load_checkpoint, load_model
from cisctool.store.layout import RunLayout

from helpers import crash_at


def test_resume_after_a_crash_equals_an_uninterrupted_run(demo_config, tmp_path):
    whole = train_round(with_overrides(demo_config, {"workdir": str(tmp_path / "whole")}))
    assert whole.steps == 4 and whole.model_path.exists()

    crashed_config = with_overrides(demo_config, {"workdir": str(tmp_path / "crashed")})
    with crash_at("train-step:3"):  # last periodic checkpoint: step 2
        train_round(crashed_config)
    assert not RunLayout.of(crashed_config).model(0).exists()
    assert load_checkpoint(RunLayout.of(crashed_config).last(0))["step"] == 2
    resumed = train_round(crashed_config, resume=True)
    assert resumed.resumed_from == 2 and resumed.steps == 4

    expected = load_checkpoint(whole.model_path)["model"]
    actual = load_checkpoint(resumed.model_path)["model"]
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)


def test_resume_refuses_other_settings(demo_config, tmp_path):
    with crash_at("train-step:3"):
        train_round(demo_config)
    changed = with_overrides(demo_config, {"train.lr": 0.5})
    with pytest.raises(InputError, match="last.pt: written with other"):
        train_round(changed, resume=True)


def test_train_and_evaluate_writes_metrics_and_a_loadable_model(demo_config):
    outcome, result = train_and_evaluate(demo_config, "cpu", resume=False)
    layout = RunLayout.of(demo_config)
    metrics = json.loads(layout.metrics(0).read_text())
    assert metrics["steps"] == 4 and metrics["val"]["images"] == 4
    assert 0 <= result.mean_iou <= 1 and len(result.per_class_iou) == demo_config.data.num_classes
    assert layout.resolved_config.exists() and "step 4/4" in layout.train_log(0).read_text()
    model, trained = load_model(outcome.model_path, expected=demo_config)
    assert trained.model.backbone == "tiny" and not model.training


def test_consistency_off_changes_only_the_loss(demo_config, tmp_path):
    on = train_round(with_overrides(demo_config, {"workdir": str(tmp_path / "on"), "train.consistency_weight": 1.0}))
    off = train_round(with_overrides(demo_config, {"workdir": str(tmp_path / "off"), "train.consistency_weight": 0.0}))
    assert math.isfinite(on.final_loss) and math.isfinite(off.final_loss)
    assert on.final_loss != off.final_loss


def test_consistency_ramp_rises_from_exp_minus_5_to_one_over_its_share_of_the_steps():
    assert consistency_ramp(0, 100, 0.0) == 1.0 and consistency_ramp(99, 100, 0.0) == 1.0
    assert math.isclose(consistency_ramp(0, 100, 0.2), math.exp(-5))
    assert math.isclose(consistency_ramp(10, 100, 0.2), math.exp(-5 * 0.25))
    assert consistency_ramp(20, 100, 0.2) == 1.0 and consistency_ramp(99, 100, 0.2) == 1.0
    ramp = [consistency_ramp(step, 100, 0.2) for step in range(21)]
    assert all(later > earlier for earlier, later in zip(ramp, ramp[1:]))


def test_ohem_threshold_switches_the_labeled_loss_to_hard_pixels(demo_config, tmp_path):
    """One step from the same start on the same batch: the mean CE of the hardest pixels exceeds the mean of all."""

    def first_step_ce(name: str, overrides: dict) -> float:
        config = with_overrides(demo_config, {"workdir": str(tmp_path / name), "train.max_steps": 1, **overrides})
        train_round(config)
        line = RunLayout.of(config).train_log(0).read_text().split("step 1/1 ")[1]
        return float(line.split(" ce ")[1].split()[0])

    plain, hard = first_step_ce("plain", {}), first_step_ce("ohem", {"train.ohem_threshold": 0.7})
    assert hard > plain > 0
    assert first_step_ce("all", {"train.ohem_threshold": 1.0}) == pytest.approx(plain, rel=1e-4)


def test_a_train_key_added_later_keeps_finished_runs_up_to_date(demo_config, monkeypatch):
    default = train_data.training_signature(demo_config, 0, 1, None)
    for changed in ({"train.ohem_threshold": 0.7}, {"model.decoder_stride": 2}):
        assert train_data.training_signature(with_overrides(demo_config, changed), 0, 1, None) != default
    real_to_dict = config_module.to_dict

    def as_before_the_keys(config):  # the settings a run written before these keys existed hashed
        values = real_to_dict(config)
        added = ("consistency_rampup", "ohem_threshold", "ohem_min_kept", "round_batch_size", "pseudo_class_balance")
        for key in added:
            del values["train"][key]
        del values["model"]["decoder_stride"]
        return values

    one_batch = with_overrides(demo_config, {"train.round_batch_size": 0})  # as every round drew before
    later_round = train_data.training_signature(one_batch, 1, 1, None)
    monkeypatch.setattr(config_module, "to_dict", as_before_the_keys)
    assert train_data.training_signature(demo_config, 0, 1, None) == default
    assert train_data.training_signature(one_batch, 1, 1, None) == later_round


def test_a_setting_refining_one_that_is_off_leaves_finished_runs_up_to_date(demo_config):
    def signature(overrides: dict) -> str:
        return train_data.training_signature(with_overrides(demo_config, overrides), 0, 1, None)

    for switch, refinement, value in (("consistency_weight", "consistency_rampup", 0.3),
                                      ("ohem_threshold", "ohem_min_kept", 0.5)):  # fmt: skip
        off, on = {f"train.{switch}": 0.0}, {f"train.{switch}": 0.7}
        assert signature({**off, f"train.{refinement}": value}) == signature(off)
        assert signature({**on, f"train.{refinement}": value}) != signature(on)


def test_later_rounds_draw_round_batch_size_labeled_images_and_round_0_ignores_it(demo_config):
    from cisctool.data.datasets import LabeledPairDataset
    from cisctool.data.splits import split_entries
    from cisctool.steps.distributed import Processes

    config = with_overrides(demo_config, {"train.batch_size": 8, "train.round_batch_size": 4, "train.workers": 0})
    entries = split_entries(config, "labeled")
    dataset = LabeledPairDataset(entries, train_data.pair_settings(config))
    pairs = {round_index: next(iter(train_data.labeled_loader(config, round_index, dataset, 0, 1, Processes(), "cpu")))
             for round_index in (0, 1)}  # fmt: skip
    assert len(pairs[0]["image"]) == 4 and len(pairs[1]["image"]) == 2  # pairs: two images each
    same_batch = with_overrides(config, {"train.round_batch_size": 0})
    assert train_data.training_signature(config, 0, 1, None) == train_data.training_signature(same_batch, 0, 1, None)
    assert train_data.training_signature(config, 1, 1, None) != train_data.training_signature(same_batch, 1, 1, None)


def test_poly_schedule_and_head_learning_rate(demo_config):
    assert scheduled_lr(0.01, 0, 100) == 0.01 and scheduled_lr(0.01, 100, 100) == 0
    assert math.isclose(scheduled_lr(0.01, 50, 100), 0.01 * 0.5**0.9)
    # warm-up: 10 of 100 steps ramp linearly to the base rate, then poly from there
    assert math.isclose(scheduled_lr(0.01, 0, 100, 0.1), 0.001)
    assert math.isclose(scheduled_lr(0.01, 9, 100, 0.1), 0.01)
    assert math.isclose(scheduled_lr(0.01, 50, 100, 0.1), 0.01 * 0.5**0.9)
    from cisctool.models import build_model

    model = build_model("deeplabv3plus", "tiny", 3)
    groups = build_optimizer(model, demo_config).param_groups
    assert [group["lr_mult"] for group in groups] == [1.0, demo_config.train.head_lr_mult]
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))
    adamw = build_optimizer(model, with_overrides(demo_config, {"train.optimizer": "adamw"}))
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 2


def test_masked_cross_entropy_ignores_pixels_and_never_nans():
    logits = torch.randn(1, 3, 2, 2)
    masks = torch.tensor([[[0, 1], [255, 255]]])
    expected = torch.nn.functional.cross_entropy(logits, masks, ignore_index=255)
    torch.testing.assert_close(masked_cross_entropy(logits, masks, 255), expected)
    assert masked_cross_entropy(logits, torch.full_like(masks, 255), 255) == 0


def test_round_one_resume_after_a_crash_equals_an_uninterrupted_run(demo_config, trained_workdir, tmp_path):
    import shutil

    from cisctool.steps.rectify import rectify_round

    runs = {}
    for name in ("whole", "crashed"):
        shutil.copytree(trained_workdir, tmp_path / name)
        runs[name] = with_overrides(demo_config, {"workdir": str(tmp_path / name), "train.round_max_steps": 4})
        rectify_round(runs[name], 1, "cpu")
    whole = train_round(runs["whole"], 1)
    with crash_at("train-step:3"):
        train_round(runs["crashed"], 1)
    assert not RunLayout.of(runs["crashed"]).model(1).exists()
    resumed = train_round(runs["crashed"], 1, resume=True)
    assert resumed.resumed_from == 2 and resumed.steps == 4 and whole.pseudo_images == (3, 6)
    expected = load_checkpoint(whole.model_path)["model"]
    actual = load_checkpoint(resumed.model_path)["model"]
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)


def test_round_budgets_in_epochs_scale_with_the_data(demo_config):
    from cisctool.steps.train_data import total_steps_of

    config = with_overrides(demo_config, {"train.max_steps": 0, "train.epochs": 10, "train.batch_size": 8,
                                          "train.round_max_steps": 0, "train.round_epochs": 2.5,
                                          "train.pseudo_batch_size": 4})  # fmt: skip
    assert total_steps_of(config, 30) == 10 * (30 // 4)  # 4 pairs a step
    assert total_steps_of(config, 30, round_index=1, pseudo_images=250) == 157  # ceil(2.5 × 250 / 4)
    assert total_steps_of(config, 30, round_index=2, pseudo_images=500) == 313
    fixed = with_overrides(config, {"train.round_max_steps": 7})
    assert total_steps_of(fixed, 30, round_index=1, pseudo_images=250) == 7


def test_pseudo_class_balance_scales_each_pixels_weight_by_its_labels_factor(
    demo_config, trained_workdir, tmp_path, capsys
):
    import dataclasses
    import functools
    import shutil

    import numpy as np

    from cisctool.data.check import labeled_class_shares
    from cisctool.data.datasets import PseudoLabeledDataset
    from cisctool.steps.rectify import rectify_round
    from cisctool.store.pseudo_labels import PseudoLabels

    shutil.copytree(trained_workdir, tmp_path / "work")
    plain = with_overrides(demo_config, {"workdir": str(tmp_path / "work"), "train.workers": 0})
    balanced = with_overrides(plain, {"train.pseudo_class_balance": 1.0})
    rectify_round(plain, 1, "cpu")
    selection = train_data.select_pseudo_labels(balanced, 1)
    assert selection.class_factors is None  # training adds them; `status` reads the selection without
    selection = dataclasses.replace(selection, class_factors=train_data.pseudo_class_factors(balanced, selection))
    num_classes = balanced.data.num_classes
    loss_mass = np.zeros(num_classes)  # by hand: each class's summed weight over the chosen images
    with PseudoLabels(selection.path) as stored:
        for position in selection.positions:
            label = stored.pixels("label", position)
            weight = stored.pixels("weight", position).astype(np.float64)
            loss_mass += [weight[label == index].sum() for index in range(num_classes)]
    labeled = np.array(list(labeled_class_shares(balanced).values()))
    known = (labeled > 0) & (loss_mass > 0)
    expected = np.ones(num_classes)
    expected[known] = labeled[known] / (loss_mass[known] / loss_mass.sum())
    assert np.allclose(selection.class_factors, expected) and expected.max() > 1 > expected.min()

    def item(factors):
        dataset = PseudoLabeledDataset(
            functools.partial(PseudoLabels, selection.path), selection.unlabeled,
            selection.positions.tolist(), train_data.pair_settings(balanced), factors,
        )  # fmt: skip
        return dataset[(0, 123)]

    from cisctool.steps.distributed import Processes

    loader = train_data.pseudo_loader(balanced, 1, selection, 0, 1, Processes(), "cpu")
    assert np.array_equal(loader.dataset.factor_of_label[:num_classes], selection.class_factors.astype(np.float32))
    before, after = item(None), item(selection.class_factors)
    counted = before["mask"] != balanced.data.ignore_index
    factor_of_pixel = torch.from_numpy(selection.class_factors).float()[before["mask"][counted].long()]
    assert torch.equal(after["mask"], before["mask"]) and torch.equal(after["image"], before["image"])
    torch.testing.assert_close(after["weight"][counted], before["weight"][counted] * factor_of_pixel)
    assert train_data.training_signature(balanced, 0, 1, None) == train_data.training_signature(plain, 0, 1, None)
    assert train_data.training_signature(balanced, 1, 1, None) != train_data.training_signature(plain, 1, 1, None)
    trained = train_round(with_overrides(balanced, {"train.round_max_steps": 2}), 1)
    line = "pseudo loss class balance (τ = 1): background ×"
    assert trained.steps == 2 and line in capsys.readouterr().out
    assert line in RunLayout.of(balanced).train_log(1).read_text()


def test_a_config_of_only_data_and_model_continues_rounds_from_the_previous_model_at_a_relative_rate(
    demo_dir, tmp_path
):
    import tomllib

    from cisctool.config import load_config
    from cisctool.steps.rounds import run_rounds

    minimal = tmp_path / "minimal.toml"
    minimal.write_text(f'[data]\nroot = "{demo_dir}"\nnum_classes = 6\n\n[model]\nbackbone = "tiny"\n')
    speed = {"workdir": str(tmp_path), "train.max_steps": 2, "train.batch_size": 4, "train.crop_size": 64,
             "train.workers": 0, "train.log_every": 1, "eval.batch_size": 4, "rectify.batch_size": 2}  # fmt: skip
    config = load_config(minimal, speed)  # speed only: no round, rate or TTA key is set
    run_rounds(config, 1, "cpu")
    layout = RunLayout.of(config)
    resolved = tomllib.loads(layout.resolved_config.read_text())["train"]
    assert (resolved["init"], resolved["round_lr"], resolved["round_lr_mult"], resolved["round_epochs"]) == (
        "previous", 0.0, 0.2, 5.0)
    assert json.loads(layout.metrics(1).read_text())["init"] == "previous"
    rates = [float(line.rsplit(" lr ", 1)[1]) for line in layout.train_log(1).read_text().splitlines()
             if line.startswith("step ")]  # fmt: skip
    assert rates and max(rates) <= 0.2 * config.train.lr * (1 + 1e-3)  # 0.2 × train.lr, warm-up then decay
