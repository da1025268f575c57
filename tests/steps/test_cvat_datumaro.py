"""Our CVAT zip through CVAT's own reader and writer: Datumaro, which CVAT's "Segmentation mask 1.1"
import and export are built on (format `voc_segmentation`). It lives in a virtual environment of its
own, `.dm-venv` (made by .ci/run; its pyarrow pin clashes with Label Studio's), never in the project's,
so it runs as a separate process that exchanges .npz files."""

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST_TRAINING

from cisctool.cli.main import main
from cisctool.data.masks import read_mask
from cisctool.store.pseudo_labels import PseudoLabels

PYTHON = Path(__file__).resolve().parents[2] / ".dm-venv/bin/python"
CLASSES = ["background", "disc", "square", "triangle", "ring", "cross"]

# Read a Segmentation mask 1.1 folder as CVAT does, save every mask as class names' indices;
# then write one edited mask back as CVAT exports it (VOC colours from the labelmap).
DATUMARO = """
import sys, numpy as np, datumaro as dm
source, masks_out, edited_in, target = sys.argv[1:5]
dataset = dm.Dataset.import_from(source, "voc_segmentation")
labels = dataset.categories()[dm.AnnotationType.label]
names = [label.name for label in labels]
read = {}
for item in dataset:
    masks = [a for a in item.annotations if a.type == dm.AnnotationType.mask]
    canvas = np.full(masks[0].image.shape, -1, dtype=np.int16)
    for mask in masks:
        canvas[mask.image.astype(bool)] = mask.label
    read[item.id] = canvas
np.savez(masks_out, names=np.array(names), **read)
edited = np.load(edited_in)
items = [dm.DatasetItem(id=str(key), subset="default", annotations=[
             dm.Mask(image=edited[key] == index, label=index)
             for index in np.unique(edited[key]).tolist()]) for key in edited.files]
colours = dataset.categories()[dm.AnnotationType.mask].colormap
label_map = {name: (tuple(int(c) for c in colours[index]), [], []) for index, name in enumerate(names)}
out = dm.Dataset.from_iterable(items, categories=names)
out.export(target, "voc_segmentation", apply_colormap=True, label_map=label_map)
"""


def _datumaro_python() -> Path:
    reason = f"{PYTHON} with datumaro missing (.ci/run makes it)"
    found = PYTHON.is_file() and subprocess.run([str(PYTHON), "-c", "import datumaro"]).returncode == 0
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return PYTHON


def cli(data: Path, *words: str):
    settings = {"workdir": str(data.parent / "work"), **FAST_TRAINING}
    flags = [item for key, value in settings.items() for item in ("--set", f"{key}={json.dumps(value)}")]
    return CliRunner().invoke(main, ["--config", str(data / "cisctool.toml"), *flags, *words])


@pytest.mark.slow
def test_cvat_zip_read_and_written_by_datumaro(reviewed_workdir: Path, demo_dir: Path, tmp_path: Path):
    python = _datumaro_python()
    data, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(demo_dir, data)
    shutil.copytree(reviewed_workdir, work)
    exported = tmp_path / "review.zip"
    result = cli(data, "export", "--round", "1", "--format", "cvat", "--worst", "3", "--out", str(exported))
    assert result.exit_code == 0, result.output
    with PseudoLabels(work / "runs/demo/round1/pseudo.h5") as stored:
        ours = {image_id: stored.pixels("label", index) for index, image_id in enumerate(stored.ids)}
    with zipfile.ZipFile(exported) as archive:
        archive.extractall(tmp_path / "extracted")

    # the reviewer's edit: a block of the first image repainted as `ring`
    first = (tmp_path / "extracted/ImageSets/Segmentation/default.txt").read_text().split()[0]
    changed = ours[first].copy()
    changed[4:20, 6:30] = CLASSES.index("ring")
    # in Datumaro's label indices, as read above: ignore (dropped pixels) is the label `ignored`
    np.savez(tmp_path / "edited.npz", **{first: np.where(changed == 255, len(CLASSES), changed)})
    done = subprocess.run(
        [str(python), "-c", DATUMARO, str(tmp_path / "extracted"), str(tmp_path / "read.npz"),
         str(tmp_path / "edited.npz"), str(tmp_path / "written")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    read = np.load(tmp_path / "read.npz")
    names = list(read["names"])
    assert names[: len(CLASSES)] == CLASSES and names[len(CLASSES)] == "ignored"
    listed = (tmp_path / "extracted/ImageSets/Segmentation/default.txt").read_text().split()
    assert len(listed) == 3 and sorted(key for key in read.files if key != "names") == sorted(listed)
    for image_id in read.files:
        if image_id == "names":
            continue
        as_read = read[image_id]
        expected = np.where(ours[image_id] == 255, len(CLASSES), ours[image_id])  # ignore = label `ignored`
        assert np.array_equal(as_read, expected), image_id

    written = tmp_path / "corrected.zip"
    with zipfile.ZipFile(written, "w") as archive:
        for path in sorted((tmp_path / "written").rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tmp_path / "written").as_posix())
    split = data / "splits/reviewed.txt"
    result = cli(data, "data", "import", "--format", "cvat", str(written), "--out", str(split))
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_mask(data / f"reviewed/{first}.png"), changed)
    assert not np.array_equal(changed, ours[first])
