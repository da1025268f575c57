import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cisctool.cli.main import main
from cisctool.config import load_config
from cisctool.data.masks import write_mask

from helpers import fast_project

FAST_FLAGS = ["--max-steps", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands write runs/ under the current directory, like a training script."""
    monkeypatch.chdir(tmp_path)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def project(demo_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny demo data with the fast training settings in its config."""
    return fast_project(demo_dir, tmp_path / "data").parent


def test_make_demo_check_train_eval(project: Path, tmp_path: Path):
    config = str(project / "cisctool.toml")
    result = run("--config", config, "data", "check")
    assert result.exit_code == 0, result.output
    assert "labeled" in result.output and "all splits" in result.output

    result = run("--config", config, "train", *FAST_FLAGS)
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "runs/demo/round0/model.pt" in result.output
    assert (tmp_path / "runs/demo/round0/metrics.json").exists()

    result = run("--config", config, "eval", "--json", "scores.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    val = json.loads((tmp_path / "runs/demo/round0/metrics.json").read_text())["val"]
    assert list(scores["per_class_iou"]) == list(load_config(project / "cisctool.toml").class_names)
    assert scores["images"] == len((project / "splits/val.txt").read_text().splitlines())
    ious = [iou for iou in scores["per_class_iou"].values() if iou is not None]
    assert scores["mean_iou"] == pytest.approx(sum(ious) / len(ious))
    # eval of the saved model scores what training measured on the same model and split
    assert scores["per_class_iou"] == val["per_class_iou"] and scores["mean_iou"] == val["mean_iou"]


def break_missing_root(data: Path) -> str:
    text = (data / "cisctool.toml").read_text().replace('root = "."', 'root = "nowhere"')
    (data / "cisctool.toml").write_text(text)
    return "nowhere: data root folder not found"


def break_missing_image(data: Path) -> str:
    first = (data / "splits/labeled.txt").read_text().split()[0]
    (data / first).unlink()
    return f"{first}: image file not found"


def break_mask_size(data: Path) -> str:
    mask = (data / "splits/labeled.txt").read_text().split()[1]
    write_mask(data / mask, np.zeros((7, 9), dtype=np.uint8))
    return f"{mask}: mask size 9×7 differs from image size"


def break_label_value(data: Path) -> str:
    mask_path = data / (data / "splits/labeled.txt").read_text().split()[1]
    mask = np.array(Image.open(mask_path))
    mask[0, 0] = 17
    write_mask(mask_path, mask)
    return "label value 17 ≥ num_classes (6)"


def break_empty_split(data: Path) -> str:
    (data / "splits/labeled.txt").write_text("\n")
    return "labeled.txt: split is empty"


def break_unknown_key(data: Path) -> str:
    (data / "cisctool.toml").write_text((data / "cisctool.toml").read_text() + "\n[index]\nfactroy = 1\n")
    return "unknown key 'index.factroy'; valid keys in [index]:"


def break_corrupt_image(data: Path) -> str:
    first = (data / "splits/labeled.txt").read_text().split()[0]
    (data / first).write_bytes(b"not a png")
    return f"{first}: cannot read image"


@pytest.mark.parametrize(
    "breaker",
    [break_missing_root, break_missing_image, break_mask_size, break_label_value,
     break_empty_split, break_unknown_key, break_corrupt_image],
)  # fmt: skip
@pytest.mark.parametrize("command", [["train", *FAST_FLAGS], ["data", "check"]])
def test_bad_input_is_one_line_exit_2(project: Path, tmp_path: Path, breaker, command):
    expected = breaker(project)
    result = run("--config", str(project / "cisctool.toml"), *command)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and expected in lines[-1], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs/demo/round0/model.pt").exists()


def test_missing_config(tmp_path: Path):
    result = run("train")
    assert result.exit_code == 2 and "cisctool.toml: config file not found" in result.output
    result = run("--config", "x.toml", "train", "--round", "1")
    assert result.exit_code == 2 and "x.toml: config file not found" in result.output


@pytest.mark.slow
def test_installed_entry_point_runs_make_demo(tmp_path: Path):
    executable = Path(sys.executable).parent / "cisctool"
    completed = subprocess.run(
        [str(executable), "data", "make-demo", "d", "--labeled", "4", "--unlabeled", "2", "--val", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "d/cisctool.toml").exists()
    assert len((tmp_path / "d/splits/labeled.txt").read_text().splitlines()) == 4


def test_set_overrides_config_keys(project: Path, tmp_path: Path):
    config = str(project / "cisctool.toml")
    result = run("--config", config, "--set", "name=other", "--set", "train.max_steps=1", "train",
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1/1" in result.output and (tmp_path / "runs/other/round0/model.pt").exists()
    result = run("--config", config, "--set", "train.lr='fast'", "train")
    assert result.exit_code == 2 and "train.lr must be float" in result.output


def test_index_build_and_info(project: Path, tmp_path: Path):
    config = str(project / "cisctool.toml")
    result = run("--config", config, "index", "build")
    assert result.exit_code == 2 and "no model for round 0" in result.output
    assert run("--config", config, "train", *FAST_FLAGS).exit_code == 0
    result = run("--config", config, "index", "build", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "indexes/demo/round0.faiss" in result.output and "background" in result.output
    result = run("--config", config, "index", "info")
    assert result.exit_code == 0 and re.search(r"stale\s*│\s*no\s*│", result.output), result.output
    result = run("--config", config, "index", "build", "--factory", "IVF4096,Flat", "--device", "cpu")
    assert result.exit_code == 2 and "4096 inverted lists need at least 4096" in result.output
    assert run("--config", config, "train", *FAST_FLAGS, "--consistency-weight", "1").exit_code == 0
    result = run("--config", config, "index", "info")
    assert result.exit_code == 0 and "yes: model changed since" in result.output


def test_index_query_prints_guides_and_saves_a_picture(project: Path, tmp_path: Path):
    config = str(project / "cisctool.toml")
    assert run("--config", config, "train", *FAST_FLAGS).exit_code == 0
    image = project / (project / "splits/unlabeled.txt").read_text().split()[0]
    result = run("--config", config, "index", "query", str(image), "--device", "cpu")
    assert result.exit_code == 2 and "round0.faiss: index file not found" in result.output
    assert run("--config", config, "index", "build", "--device", "cpu").exit_code == 0
    result = run("--config", config, "index", "query", str(image), "-k", "2", "--save", "q.png",
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "guide image" in result.output and "lab_" in result.output
    from PIL import Image

    with Image.open(tmp_path / "q.png") as picture:
        assert picture.height == 160 and picture.width > 2 * 160
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    result = run("--config", config, "index", "query", str(broken), "--device", "cpu")
    assert result.exit_code == 2 and "broken.png: cannot read image" in result.output


@pytest.fixture
def project_round0(project: Path) -> str:
    """The project with round 0 trained and its index built; returns the config path."""
    config = str(project / "cisctool.toml")
    assert run("--config", config, "train", *FAST_FLAGS).exit_code == 0
    assert run("--config", config, "index", "build", "--device", "cpu").exit_code == 0
    return config


def test_rectify_export_and_pseudo_eval(project_round0: str, tmp_path: Path):
    config = project_round0
    result = run("--config", config, "rectify", "--round", "1", "--batch-size", "4", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "raw mIoU %" in result.output and "confidence" in result.output and "img/s" in result.output
    assert (tmp_path / "runs/demo/round1/pseudo.h5").is_file()
    quality = json.loads((tmp_path / "runs/demo/round1/pseudo_quality.json").read_text())
    assert quality["images"] == 6 and quality["guide"] == "nearest"

    result = run("--config", config, "eval", "--round", "1", "--split", "pseudo", "--json", "p.json")
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "p.json").read_text())
    assert scored["raw_miou"] == pytest.approx(quality["raw_miou"])  # file and live report agree

    result = run("--config", config, "export", "--round", "1", "--out", "png", "--overlay")
    assert result.exit_code == 0, result.output
    masks = sorted((tmp_path / "png").glob("*.png"))
    assert len(masks) == 6 and len(list((tmp_path / "png/overlay").glob("*.png"))) == 6
    from cisctool.data.masks import read_mask
    from cisctool.store.pseudo_labels import PseudoLabels

    with PseudoLabels(tmp_path / "runs/demo/round1/pseudo.h5") as stored:
        assert np.array_equal(read_mask(tmp_path / "png" / f"{stored.ids[0]}.png"), stored.pixels("label", 0))
        with Image.open(masks[0]) as picture:
            assert picture.mode == "P"


def test_rectify_bad_inputs_exit_2_and_damage_nothing(project_round0: str, project: Path, tmp_path: Path):
    config = project_round0
    rectify = ["--config", config, "rectify", "--round", "1", "--device", "cpu"]
    result = run("--config", config, "rectify", "--round", "2")
    assert result.exit_code == 2 and "round1/model.pt: no model for round 1" in result.output
    assert run(*rectify).exit_code == 0
    pseudo = tmp_path / "runs/demo/round1/pseudo.h5"
    before = pseudo.read_bytes()
    result = run(*rectify)
    assert result.exit_code == 2 and "already exists; pass --force" in result.output
    unlabeled = (project / "splits/unlabeled.txt").read_text().split()[0]
    image_bytes = (project / unlabeled).read_bytes()
    (project / unlabeled).write_bytes(b"broken")
    result = run(*rectify, "--force")
    assert result.exit_code == 2 and f"{unlabeled}: cannot read image" in result.output.replace("\n", "")
    assert pseudo.read_bytes() == before
    (project / unlabeled).write_bytes(image_bytes)
    shutil.rmtree(tmp_path / "runs/demo/round1")
    (tmp_path / "runs/demo/round1").write_text("a file where the round folder should be")
    result = run(*rectify)
    assert result.exit_code == 2 and "cannot create the pseudo-label file's folder" in result.output.replace("\n", "")
    assert run("--config", config, "train", *FAST_FLAGS, "--consistency-weight", "1").exit_code == 0
    result = run(*rectify)
    assert result.exit_code == 2 and "stale" in result.output
    (tmp_path / "indexes/demo/round0.json").unlink()
    result = run(*rectify)
    assert result.exit_code == 2 and "round0.json: index file not found" in result.output.replace("\n", "")
    assert "Traceback" not in result.output


def test_demo_runs_two_rounds_then_skips_every_step(project: Path, tmp_path: Path):
    result = run("demo", "--out", str(project), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "demo: 2 round(s) of CISC-R" in result.output and "rectify 2" in result.output
    for path in ("round1/pseudo.h5", "round2/pseudo.h5", "round2/model.pt", "round2/metrics.json"):
        assert (tmp_path / "runs/demo" / path).is_file(), path
    model_bytes = (tmp_path / "runs/demo/round2/model.pt").read_bytes()
    result = run("demo", "--out", str(project), "--device", "cpu")
    assert result.exit_code == 0 and result.output.count("up to date, skipped") == 7, result.output
    assert (tmp_path / "runs/demo/round2/model.pt").read_bytes() == model_bytes


def test_round_one_trains_on_pseudo_labels_and_refuses_wrong_files(project_round0: str, project: Path, tmp_path: Path):
    config = project_round0
    round1 = tmp_path / "runs/demo/round1"
    result = run("--config", config, "train", "--round", "1", *FAST_FLAGS)
    assert result.exit_code == 2 and "pseudo.h5: pseudo-label file not found" in result.output.replace("\n", "")
    assert run("--config", config, "rectify", "--round", "1", "--device", "cpu").exit_code == 0
    (round1 / "pseudo.h5").rename(round1 / "pseudo.partial.h5")
    result = run("--config", config, "train", "--round", "1", *FAST_FLAGS)
    assert result.exit_code == 2 and "unfinished" in result.output
    (round1 / "pseudo.partial.h5").rename(round1 / "pseudo.h5")

    result = run("--config", config, "train", "--round", "1", *FAST_FLAGS, "--init", "previous")
    assert result.exit_code == 0, result.output
    assert "round 1 on val" in result.output and (round1 / "model.pt").is_file()
    log = (round1 / "train.log").read_text()
    assert "pseudo-labeled images: 3 of 6" in log and "pseudo" in log.splitlines()[-1]
    metrics = json.loads((round1 / "metrics.json").read_text())
    assert metrics["round"] == 1 and metrics["init"] == "previous"

    round2 = tmp_path / "runs/demo/round2"
    round2.mkdir()
    shutil.copy(round1 / "pseudo.h5", round2 / "pseudo.h5")
    result = run("--config", config, "train", "--round", "2", *FAST_FLAGS)
    assert result.exit_code == 2 and "holds pseudo labels for round 1, not round 2" in result.output.replace("\n", "")
    result = run("--config", config, "train", "--round", "3", *FAST_FLAGS)
    assert result.exit_code == 2 and "no model for round 2" in result.output

    split = project / "splits/unlabeled.txt"
    split.write_text("\n".join(split.read_text().splitlines()[:2]) + "\n")
    result = run("--config", config, "train", "--round", "1", *FAST_FLAGS)
    assert result.exit_code == 2 and "is not in the unlabeled split" in result.output.replace("\n", "")
    assert run("--config", config, "train", *FAST_FLAGS, "--consistency-weight", "1").exit_code == 0
    result = run("--config", config, "train", "--round", "1", *FAST_FLAGS)
    assert result.exit_code == 2 and "made with another round-0 model" in result.output.replace("\n", "")
    assert "Traceback" not in result.output


def test_predict_writes_palette_masks_for_any_images(trained_workdir: Path, demo_dir: Path, tmp_path: Path):
    checkpoint = str(trained_workdir / "runs/demo/round0/model.pt")
    images = [demo_dir / line.split()[0] for line in (demo_dir / "splits/val.txt").read_text().splitlines()[:3]]
    result = run("predict", checkpoint, *map(str, images), "--out", "masks", "--overlay", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "wrote 3 masks" in result.output and "background" in result.output
    for image in images:
        with Image.open(tmp_path / "masks" / f"{image.stem}.png") as mask, Image.open(image) as picture:
            assert mask.mode == "P" and mask.size == picture.size
            assert max(np.asarray(mask).ravel()) < 6
        assert (tmp_path / "masks/overlay" / f"{image.stem}.png").is_file()
    result = run("predict", "missing.pt", str(images[0]), "--out", "m2")
    assert result.exit_code == 2 and "missing.pt: checkpoint not found" in result.output
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = run("predict", checkpoint, str(tmp_path / "bad.png"), "--out", "m3", "--device", "cpu")
    assert result.exit_code == 2 and "bad.png: cannot read image" in result.output.replace("\n", "")


def test_rectify_shards_and_merge_through_the_cli(project_round0: str, tmp_path: Path):
    rectify = ["--config", project_round0, "--set", "rectify.prior_alignment=1.0",
               "rectify", "--round", "1", "--batch-size", "2", "--device", "cpu"]  # fmt: skip
    result = run(*rectify, "--shard", "2/2")
    assert result.exit_code == 2 and "is not I/N with 0 ≤ I < N" in result.output
    for shard in ("0/2", "1/2"):
        assert run(*rectify, "--shard", shard).exit_code == 0
    result = run(*rectify, "--merge")
    assert result.exit_code == 0, result.output
    assert "(merged)" in result.output and (tmp_path / "runs/demo/round1/pseudo.h5").is_file()
    quality = json.loads((tmp_path / "runs/demo/round1/pseudo_quality.json").read_text())
    assert quality["images"] == 6
    # every shard computed the same factors; the merged report and table carry them
    shard_reports = [tmp_path / f"runs/demo/round1/pseudo.shard{i}of2.json" for i in range(2)]
    shard_factors = [json.loads(path.read_text())["prior_alignment"] for path in shard_reports]
    assert shard_factors[0] == shard_factors[1] == quality["prior_alignment"]
    assert quality["prior_alignment"]["strength"] == 1.0 and "prior factor" in result.output
