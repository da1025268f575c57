"""The review loop's files: Label Studio tasks, CVAT zips, and corrected masks coming back as labeled images."""

import io
import json
import shutil
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST_TRAINING
from PIL import Image

from cisctool.cli.main import main
from cisctool.data.labelstudio import rle_decode, rle_encode
from cisctool.data.masks import image_size, read_mask, voc_palette
from cisctool.data.splits import read_split
from cisctool.report.review import review_queue, review_scores
from cisctool.store.pseudo_labels import PseudoLabels

CLASSES = ["background", "disc", "square", "triangle", "ring", "cross"]
IGNORE_COLOUR = tuple(voc_palette()[3 * 255 : 3 * 256])


@pytest.fixture
def project(reviewed_workdir: Path, demo_dir: Path, tmp_path: Path) -> Path:
    """Copies of the tiny demo data and of a run of one round over it; returns the data folder."""
    shutil.copytree(demo_dir, tmp_path / "data")
    shutil.copytree(reviewed_workdir, tmp_path / "work")
    return tmp_path / "data"


def cli(project: Path, command: str, *paths: str):
    """Run `cisctool` on the project: `command` is its words, `paths` follow it as they are."""
    settings = {"workdir": str(project.parent / "work"), **FAST_TRAINING}
    flags = [item for key, value in settings.items() for item in ("--set", f"{key}={json.dumps(value)}")]
    return CliRunner().invoke(
        main, ["--config", str(project / "cisctool.toml"), *flags, *command.split(), *paths]
    )


def stored_labels(project: Path) -> dict[str, np.ndarray]:
    with PseudoLabels(project.parent / "work/runs/demo/round1/pseudo.h5") as stored:
        return {image_id: stored.pixels("label", index) for index, image_id in enumerate(stored.ids)}


def worst_ids(project: Path, count: int | None) -> list[str]:
    """The first `count` image ids of the review queue (all when None)."""
    with PseudoLabels(project.parent / "work/runs/demo/round1/pseudo.h5") as stored:
        return [stored.ids[index] for index in review_queue(stored, 255, count)]


def stored_review_scores(project: Path) -> dict[str, float]:
    with PseudoLabels(project.parent / "work/runs/demo/round1/pseudo.h5") as stored:
        return dict(zip(stored.ids, review_scores(stored, 255).tolist()))


def label_studio_decoder():
    return pytest.importorskip(
        "label_studio_converter.brush", reason="Label Studio's converter (make installs it with --no-deps)"
    ).decode_rle


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (97, 128), (300, 300)])
def test_rle_round_trip_through_label_studio_own_decoder(shape):
    decode_rle = label_studio_decoder()
    rng = np.random.default_rng(sum(shape))
    patterns = [rng.random(shape) < 0.5, np.ones(shape, bool), np.zeros(shape, bool)]
    blocky = np.zeros(shape, bool)
    blocky[shape[0] // 3 :, : shape[1] // 2] = True  # long runs: 300×300×4 values need runs over 2^16
    patterns.append(blocky)
    for mask in patterns:
        rle = rle_encode(mask)
        assert all(0 <= value < 256 for value in rle)
        canvas = decode_rle(rle).reshape(*shape, 4)
        assert np.array_equal(canvas[:, :, 3] == 255, mask) and set(np.unique(canvas)) <= {0, 255}
        assert np.array_equal(rle_decode(rle, *shape), mask)


def test_our_decoder_reads_label_studio_encoder_output():
    brush = pytest.importorskip(
        "label_studio_converter.brush", reason="Label Studio's converter (make installs it)"
    )
    mask = np.random.default_rng(3).random((40, 70)) < 0.3  # short runs: Label Studio writes literal words
    assert np.array_equal(rle_decode(brush.mask2rle(mask.astype(np.uint8) * 255), 40, 70), mask)
    with pytest.raises(ValueError, match="not 40×71×4"):
        rle_decode(brush.mask2rle(mask.astype(np.uint8) * 255), 40, 71)


def test_labelstudio_export_of_the_worst_reads_back_with_label_studio_decoder(project: Path, tmp_path: Path):
    decode_rle = label_studio_decoder()
    out = tmp_path / "review/tasks.json"
    result = cli(project, "export --round 1 --format labelstudio --worst 3 --out", str(out))
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    labels = stored_labels(project)
    assert [task["data"]["cisctool_id"] for task in tasks] == worst_ids(project, 3)
    config = ElementTree.fromstring((tmp_path / "review/tasks.label_config.xml").read_text())
    brush = config.find("BrushLabels")
    assert config.find("Image").get("name") == brush.get("toName") == "image" and brush.get("name") == "label"
    assert [label.get("value") for label in brush.findall("Label")] == CLASSES
    scores = []
    for task in tasks:
        image_id = task["data"]["cisctool_id"]
        assert task["data"]["image"] == f"/data/local-files/?d=images/{image_id}.png"
        assert (project / "images" / f"{image_id}.png").is_file()
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "round 1"
        assert prediction["score"] == task["data"]["review_score"]
        assert prediction["score"] == pytest.approx(stored_review_scores(project)[image_id], abs=1e-3)
        scores.append(prediction["score"])
        label = labels[image_id]
        painted = np.full(label.shape, 255, dtype=np.uint8)
        for item in prediction["result"]:
            assert (item["type"], item["from_name"], item["to_name"]) == ("brushlabels", "label", "image")
            assert (item["original_height"], item["original_width"]) == label.shape
            assert item["value"]["format"] == "rle"
            (name,) = item["value"]["brushlabels"]
            alpha = decode_rle(item["value"]["rle"]).reshape(*label.shape, 4)[:, :, 3]
            assert not np.any(painted[alpha == 255] != 255)  # one brush per pixel
            painted[alpha == 255] = CLASSES.index(name)
        assert np.array_equal(painted, label)
    assert scores == sorted(scores, reverse=True)  # score = Σ(1 − confidence)², highest first


def test_cvat_zip_layout_file_by_file(project: Path, tmp_path: Path):
    out = tmp_path / "cvat.zip"
    result = cli(project, "export --round 1 --format cvat --out", str(out))
    assert result.exit_code == 0, result.output
    labels = stored_labels(project)
    with zipfile.ZipFile(out) as archive:
        names = set(archive.namelist())
        assert names == {
            "labelmap.txt",
            "ImageSets/Segmentation/default.txt",
            *(f"SegmentationClass/{image_id}.png" for image_id in labels),
        }
        lines = [
            line for line in archive.read("labelmap.txt").decode().splitlines() if not line.startswith("#")
        ]
        colours = {}
        for line in lines:  # label : color (RGB) : 'body' parts : actions
            name, colour, parts, actions = line.split(":")
            colours[tuple(int(value) for value in colour.split(","))] = name
            assert parts == actions == ""
        assert list(colours.values()) == [*CLASSES, "ignored"] and IGNORE_COLOUR in colours
        # every image, in review order (the order CVAT's task shows them)
        assert archive.read("ImageSets/Segmentation/default.txt").decode().split() == worst_ids(project, None)
        for image_id, label in labels.items():
            with Image.open(io.BytesIO(archive.read(f"SegmentationClass/{image_id}.png"))) as mask:
                assert (
                    mask.mode == "RGB" and mask.size == image_size(project / f"images/{image_id}.png")[::-1]
                )
                pixels = np.asarray(mask)
            named = np.vectorize(lambda r, g, b: colours[(r, g, b)])(
                pixels[..., 0], pixels[..., 1], pixels[..., 2]
            )
            expected = np.where(label == 255, "ignored", np.asarray(CLASSES)[np.minimum(label, 5)])
            assert np.array_equal(named, expected)


@pytest.mark.parametrize("file_format", ["labelstudio", "cvat"])
def test_export_then_import_gives_the_same_masks_and_a_split_of_labeled_plus_imported(
    project: Path, tmp_path: Path, file_format: str
):
    if file_format == "labelstudio":
        exported, tasks = _label_studio_tasks(project, tmp_path, "--worst 4")
        exported.write_text(json.dumps(tasks))
    else:
        exported = tmp_path / "cvat.zip"
        export = cli(project, "export --round 1 --format cvat --worst 4 --out", str(exported))
        assert export.exit_code == 0, export.output
    split = project / "splits/reviewed.txt"
    result = cli(project, f"data import --format {file_format}", str(exported), "--out", str(split))
    assert result.exit_code == 0, result.output
    assert "imported 4 masks" in result.output and "data.labeled='splits/reviewed.txt'" in result.output
    labels, imported = stored_labels(project), worst_ids(project, 4)
    for image_id in imported:
        assert np.array_equal(read_mask(project / f"reviewed/{image_id}.png"), labels[image_id])
    entries = read_split(split, project, masks_required=True)
    before = read_split(project / "splits/labeled.txt", project, masks_required=True)
    assert [entry.id for entry in entries] == [entry.id for entry in before] + imported
    assert entries[: len(before)] == before
    assert [entry.mask for entry in entries[len(before) :]] == [
        project / f"reviewed/{i}.png" for i in imported
    ]


def _label_studio_tasks(project: Path, tmp_path: Path, flags: str = "") -> tuple[Path, list[dict]]:
    """Exported tasks as a reviewer who accepts every prediction leaves them."""
    path = tmp_path / "tasks.json"
    export = cli(project, f"export --round 1 --format labelstudio {flags}", "--out", str(path))
    assert export.exit_code == 0, export.output
    tasks = json.loads(path.read_text())
    for number, task in enumerate(tasks, start=1):
        task.update(id=number, annotations=[{"id": number, "result": task["predictions"][0]["result"]}])
    return path, tasks


def ls_other_project(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    path, tasks = _label_studio_tasks(project, tmp_path)
    tasks[1]["annotations"][0]["result"][0]["value"]["brushlabels"] = ["Airplane"]
    path.write_text(json.dumps(tasks))
    return "labelstudio", path, f"task 2 ({tasks[1]['data']['cisctool_id']}): unknown class name 'Airplane'"


def ls_unfinished_tasks(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    path, tasks = _label_studio_tasks(project, tmp_path)
    tasks[2]["annotations"] = []  # never submitted
    tasks[4]["annotations"][0]["was_cancelled"] = True  # skipped
    path.write_text(json.dumps(tasks))
    first = tasks[2]["data"]["cisctool_id"]
    return "labelstudio", path, f"2 of {len(tasks)} tasks have no submitted annotation (first: task 3, {first})"


def ls_image_not_unlabeled(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    path, tasks = _label_studio_tasks(project, tmp_path)
    tasks[0]["data"]["cisctool_id"] = "lab_0000"
    path.write_text(json.dumps(tasks))
    return "labelstudio", path, "image 'lab_0000' is not in the unlabeled split"


def ls_wrong_size(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    path, tasks = _label_studio_tasks(project, tmp_path)
    for item in tasks[0]["annotations"][0]["result"]:
        item["original_height"], item["original_width"] = 8, 8
        item["value"]["rle"] = rle_encode(np.ones((8, 8), bool))
    path.write_text(json.dumps(tasks))
    return "labelstudio", path, f"mask of {tasks[0]['data']['cisctool_id']!r} is 8×8, its image"


def ls_not_tasks(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"predictions": []}))
    return "labelstudio", path, "not a Label Studio JSON export"


def _cvat_zip(project: Path, tmp_path: Path, change) -> Path:
    exported = tmp_path / "cvat.zip"
    assert cli(project, "export --round 1 --format cvat --out", str(exported)).exit_code == 0
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(exported) as source, zipfile.ZipFile(edited, "w") as target:
        for name in source.namelist():
            data = change(name, source.read(name))
            if data is not None:
                target.writestr(name, data)
    return edited


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def cvat_without_labelmap(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    edited = _cvat_zip(project, tmp_path, lambda name, data: None if name == "labelmap.txt" else data)
    return "cvat", edited, "edited.zip: no labelmap.txt"


def cvat_corrupt_zip(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    edited = _cvat_zip(project, tmp_path, lambda name, data: data)
    edited.write_bytes(edited.read_bytes()[: edited.stat().st_size // 2])
    return "cvat", edited, "edited.zip: not a readable zip archive"


def cvat_unknown_class(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    edited = _cvat_zip(
        project, tmp_path, lambda name, data: data + b"car:10,20,30::\n" if name == "labelmap.txt" else data
    )
    return "cvat", edited, "labelmap.txt:9: unknown class name 'car'"


def cvat_wrong_size(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    small = _png(np.zeros((5, 7, 3), np.uint8))
    edited = _cvat_zip(project, tmp_path, lambda name, data: small if name.endswith("unl_0003.png") else data)
    return "cvat", edited, "mask of 'unl_0003' is 7×5, its image"


def cvat_unknown_colour(project: Path, tmp_path: Path) -> tuple[str, Path, str]:
    def change(name: str, data: bytes) -> bytes:
        if not name.endswith("unl_0002.png"):
            return data
        pixels = np.asarray(Image.open(io.BytesIO(data))).copy()
        pixels[0, 0] = (1, 2, 3)
        return _png(pixels)

    return (
        "cvat",
        _cvat_zip(project, tmp_path, change),
        "SegmentationClass/unl_0002.png: colour (1,2,3) is not in labelmap.txt",
    )


@pytest.mark.parametrize(
    "breaker",
    [
        ls_other_project,
        ls_unfinished_tasks,
        ls_image_not_unlabeled,
        ls_wrong_size,
        ls_not_tasks,
        cvat_without_labelmap,
        cvat_corrupt_zip,
        cvat_unknown_class,
        cvat_wrong_size,
        cvat_unknown_colour,
    ],
)
def test_bad_review_file_is_one_line_exit_2_and_writes_nothing(project: Path, tmp_path: Path, breaker):
    file_format, path, expected = breaker(project, tmp_path)
    split = tmp_path / "new_labeled.txt"
    result = cli(project, f"data import --format {file_format}", str(path), "--out", str(split))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: ") and expected in lines[0], result.output
    assert not split.exists() and not (project / "reviewed").exists()


def test_the_next_run_trains_on_images_corrected_in_cvat(project: Path, tmp_path: Path):
    worst = worst_ids(project, 2)
    square = tuple(voc_palette()[3 * 2 : 3 * 3])

    def correct(name: str, data: bytes) -> bytes:  # a reviewer paints a square in the worst image
        if name != f"SegmentationClass/{worst[0]}.png":
            return data
        pixels = np.asarray(Image.open(io.BytesIO(data))).copy()
        pixels[10:40, 10:40] = square
        return _png(pixels)

    exported = tmp_path / "queue.zip"
    assert (
        cli(project, "export --round 1 --format cvat --worst 2 --out", str(tmp_path / "all.zip")).exit_code
        == 0
    )
    with zipfile.ZipFile(tmp_path / "all.zip") as source, zipfile.ZipFile(exported, "w") as queue:
        for name in source.namelist():
            queue.writestr(name, correct(name, source.read(name)))
    split = project / "splits/next.txt"
    result = cli(project, "data import --format cvat", str(exported), "--out", str(split))
    assert result.exit_code == 0, result.output
    corrected = read_mask(project / f"reviewed/{worst[0]}.png")
    assert np.all(corrected[10:40, 10:40] == 2)

    next_run = "--set name=next --set data.labeled=splits/next.txt"
    result = cli(project, f"{next_run} run --rounds 0 --device cpu")
    assert result.exit_code == 0, result.output
    assert "train 0" in result.output and "report" in result.output
    result = cli(project, f"{next_run} index build --device cpu")
    assert result.exit_code == 0, result.output
    index = json.loads((project.parent / "work/indexes/next/round0.json").read_text())
    assert set(worst) <= set(index["image_ids"])  # round 0's model and index took them as labeled images


@pytest.mark.parametrize("file_format", ["labelstudio", "cvat", "png"])
def test_export_of_a_file_without_the_review_score_field_is_one_line_exit_2_and_writes_nothing(
    project: Path, tmp_path: Path, file_format: str
):
    pseudo = project.parent / "work/runs/demo/round1/pseudo.h5"
    with h5py.File(pseudo, "r+") as handle:
        del handle["confidence"]
    out = tmp_path / ("queue" if file_format == "png" else f"queue.{'json' if file_format == 'labelstudio' else 'zip'}")
    result = cli(project, f"export --round 1 --format {file_format} --worst 3 --out", str(out))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"Error: {pseudo}: dataset 'confidence' missing; the file is damaged"], result.output
    assert not out.exists() and not list(tmp_path.glob("queue*"))
