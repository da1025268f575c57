"""Bad inputs across commands: each gives one line naming the file or key and the problem, exit 2,
no traceback, and leaves every existing output byte for byte as it was. Each case is a row of
docs/evidence.md's "What happens when…" table."""

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cisctool.cli.main import main
from cisctool.config import load_config
from cisctool.data.masks import write_mask
from cisctool.method.index import build_index, stored_vectors
from cisctool.steps.rectify import rectify_round
from cisctool.store.index_files import load_index, save_index
from cisctool.store.pseudo_labels import PseudoLabels

from helpers import fast_project, snapshot



def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def prepared(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo data with a fast config, round 0 trained, its index built, round 1's pseudo labels made, and
again as two shards."""
    root = tmp_path_factory.mktemp("prepared")
    config = fast_project(demo_dir, root / "data")
    base = ["--config", str(config), "--set", f'workdir="{root}"']
    for command in (["train", "--device", "cpu"], ["index", "build", "--device", "cpu"],
                    ["rectify", "--round", "1", "--device", "cpu"],
                    ["rectify", "--round", "1", "--shard", "0/2", "--device", "cpu"],
                    ["rectify", "--round", "1", "--shard", "1/2", "--device", "cpu"]):  # fmt: skip
        assert invoke(*base, *command).exit_code == 0
    return root


def first_field(root: Path, split: str, column: int = 0) -> str:
    return (root / "data/splits" / split).read_text().split("\n")[0].split()[column]


def set_text(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def missing_root(root: Path) -> str:
    set_text(root / "data/cisctool.toml", 'root = "."', 'root = "nowhere"')
    return "nowhere: data root folder not found"


def missing_image(root: Path) -> str:
    image = first_field(root, "labeled.txt")
    (root / "data" / image).unlink()
    return f"{image}: image file not found"


def corrupt_image(root: Path) -> str:
    image = first_field(root, "unlabeled.txt")
    (root / "data" / image).write_bytes(b"\x89PNG broken")
    return f"{image}: cannot read image"


def mask_size(root: Path) -> str:
    mask = first_field(root, "labeled.txt", 1)
    write_mask(root / "data" / mask, np.zeros((5, 7), np.uint8))
    return f"{mask}: mask size 7×5 differs from image size"


def label_too_large(root: Path) -> str:
    mask = first_field(root, "labeled.txt", 1)
    with Image.open(root / "data" / mask) as picture:
        width, height = picture.size
    write_mask(root / "data" / mask, np.full((height, width), 9, np.uint8))
    return f"{mask}: label value 9 ≥ num_classes (6)"


def empty_split(root: Path) -> str:
    (root / "data/splits/labeled.txt").write_text("\n")
    return "labeled.txt: split is empty"


def duplicate_ids(root: Path) -> str:
    path = root / "data/splits/labeled.txt"
    first = path.read_text().split("\n")[0]
    path.write_text(path.read_text() + first + "\n")
    return "duplicate image id"


def unknown_key(root: Path) -> str:
    (root / "data/cisctool.toml").write_text((root / "data/cisctool.toml").read_text() + "\n[index]\nfactroy = 1\n")
    return "unknown key 'index.factroy'; valid keys in [index]:"


def bad_toml(root: Path) -> str:
    (root / "data/cisctool.toml").write_text("name = [unclosed\n")
    return "cisctool.toml: not valid TOML"


def stale_index(root: Path) -> str:
    with (root / "runs/demo/round0/model.pt").open("ab") as handle:
        handle.write(b"\0")
    return "round0.faiss: stale"


def missing_index(root: Path) -> str:
    (root / "indexes/demo/round0.json").unlink()
    return "round0.json: index file not found"


def truncated_pseudo(root: Path) -> str:
    path = root / "runs/demo/round1/pseudo.h5"
    path.write_bytes(path.read_bytes()[:4096])
    return "pseudo.h5: not a readable HDF5 file"


def other_version_pseudo(root: Path) -> str:
    with h5py.File(root / "runs/demo/round1/pseudo.h5", "r+") as handle:
        handle.attrs["version"] = 7
    return "pseudo.h5: pseudo-label file version 7; this cisctool reads 1"


def pseudo_of_another_split(root: Path) -> str:
    path = root / "data/splits/unlabeled.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    return "is not in the unlabeled split"


def other_architecture(root: Path) -> str:
    set_text(root / "data/cisctool.toml", 'backbone = "tiny"', 'backbone = "mobilenetv2"')
    return "model.pt: checkpoint is a tiny model; config asks for mobilenetv2"


def other_class_count(root: Path) -> str:
    text = (root / "data/cisctool.toml").read_text()
    text = re.sub(r"num_classes = \d+", "num_classes = 4", text)
    text = re.sub(r"class_names = \[[^\]]*\]", 'class_names = ["a", "b", "c", "d"]', text)
    (root / "data/cisctool.toml").write_text(text)
    return "model.pt: checkpoint has 6 classes; config has 4"


def wrong_type(root: Path) -> str:
    set_text(root / "data/cisctool.toml", "\nmax_steps = 4", '\nmax_steps = "two"')
    return "train.max_steps must be int"


def set_pseudo_attr(path: Path, key: str, value: object) -> None:
    with h5py.File(path, "r+") as handle:
        handle.attrs[key] = value


def shard(root: Path, index: int) -> Path:
    return root / f"runs/demo/round1/pseudo.shard{index}of2.h5"


def pseudo_of_another_class_list(root: Path) -> str:
    set_text(root / "data/cisctool.toml", '"disc"', '"disk"')
    return "pseudo.h5: made for classes"


def pseudo_of_another_model(root: Path) -> str:
    set_pseudo_attr(root / "runs/demo/round1/pseudo.h5", "checkpoint_sha256", "0" * 64)
    return "pseudo.h5: made with another round-0 model than the current one"


def pseudo_of_another_round(root: Path) -> str:
    set_pseudo_attr(root / "runs/demo/round1/pseudo.h5", "round", 2)
    return "pseudo.h5: holds pseudo labels for round 2, not round 1"


def pseudo_exists(root: Path) -> str:
    return "pseudo.h5: already exists; pass --force to recompute it"


def resume_with_other_settings(root: Path) -> str:
    shutil.copy(root / "runs/demo/round1/pseudo.h5", root / "runs/demo/round1/pseudo.partial.h5")
    set_text(root / "data/cisctool.toml", "[rectify]", '[rectify]\nguide = "random"')
    return "pseudo.partial.h5: was started with another inputs_hash; rerun without --resume to start over"


def train_resume_with_other_settings(root: Path) -> str:
    set_text(root / "data/cisctool.toml", "crop_size = 64", "crop_size = 48")
    return "last.pt: written with other data/model/train settings"


def merge_shards_of_another_model(root: Path) -> str:
    set_pseudo_attr(shard(root, 1), "checkpoint_sha256", "0" * 64)
    return "pseudo.shard1of2.h5: made with another checkpoint_sha256 than pseudo.shard0of2.h5"


def merge_shards_of_other_settings(root: Path) -> str:
    set_pseudo_attr(shard(root, 1), "inputs_hash", "0" * 64)
    return "pseudo.shard1of2.h5: made with another inputs_hash than pseudo.shard0of2.h5"


def merge_unfinished_shard(root: Path) -> str:
    with h5py.File(shard(root, 1), "r+") as handle:  # one batch: shard 1/2 holds it, 0/2 none
        handle["done"][0] = False
    return "pseudo.shard1of2.h5: unfinished: 1 of its"


def merge_overlapping_shards(root: Path) -> str:
    shutil.copy(shard(root, 1), shard(root, 0))
    return "pseudo.shard0of2.h5: overlaps other shards"


def merge_missing_shard(root: Path) -> str:
    shard(root, 1).unlink()
    return "pseudo.shard1of2.h5: shard missing"


def merge_mixed_shard_counts(root: Path) -> str:
    shutil.copy(shard(root, 0), root / "runs/demo/round1/pseudo.shard0of3.h5")
    return "shard files of different counts [2, 3]"


class Arbitrary:
    """A pickled class instance: loading it would run code."""


def unsafe_checkpoint(root: Path) -> str:
    torch.save({"model": {}, "config": {}, "payload": Arbitrary()}, root / "runs/demo/round0/model.pt")
    return "model.pt: holds Python objects beyond tensors and plain types; refused"


def unsafe_pretrained(root: Path) -> str:
    torch.save({"features.0.0.weight": torch.zeros(1), "payload": Arbitrary()}, root / "pretrained.pth")
    set_text(root / "data/cisctool.toml", 'backbone = "tiny"', 'backbone = "mobilenetv2"')
    set_text(root / "data/cisctool.toml", 'pretrained = ""', f'pretrained = "{root / "pretrained.pth"}"')
    return "pretrained.pth: holds Python objects beyond tensors and plain types; refused"


RECTIFY = ["rectify", "--round", "1", "--force", "--device", "cpu"]
MERGE = ["rectify", "--round", "1", "--merge", "--force"]
TRAIN1 = ["train", "--round", "1", "--device", "cpu"]
CASES: list[tuple[Callable[[Path], str], list[str]]] = [
    (missing_root, ["data", "check"]),
    (missing_image, ["train", "--device", "cpu"]),
    (corrupt_image, RECTIFY),
    (mask_size, ["index", "build", "--device", "cpu"]),
    (label_too_large, ["train", "--device", "cpu"]),
    (empty_split, ["data", "check"]),
    (duplicate_ids, ["train", "--device", "cpu"]),
    (unknown_key, ["eval", "--device", "cpu"]),
    (bad_toml, ["run", "--rounds", "1"]),
    (wrong_type, ["train", "--device", "cpu"]),
    (stale_index, RECTIFY),
    (missing_index, RECTIFY),
    (truncated_pseudo, TRAIN1),
    (other_version_pseudo, ["eval", "--round", "1", "--split", "pseudo"]),
    (pseudo_of_another_split, TRAIN1),
    (other_architecture, ["eval", "--device", "cpu"]),
    (other_class_count, ["index", "build", "--device", "cpu"]),
    (pseudo_of_another_class_list, TRAIN1),
    (pseudo_of_another_model, TRAIN1),
    (pseudo_of_another_round, TRAIN1),
    (pseudo_exists, ["rectify", "--round", "1", "--device", "cpu"]),
    (resume_with_other_settings, [*RECTIFY, "--resume"]),
    (train_resume_with_other_settings, ["train", "--resume", "--device", "cpu"]),
    (merge_shards_of_another_model, MERGE),
    (merge_shards_of_other_settings, MERGE),
    (merge_unfinished_shard, MERGE),
    (merge_overlapping_shards, MERGE),
    (merge_missing_shard, MERGE),
    (merge_mixed_shard_counts, MERGE),
    (unsafe_checkpoint, ["eval", "--device", "cpu"]),
    (unsafe_pretrained, ["train", "--device", "cpu"]),
]


@pytest.mark.parametrize(("breaker", "command"), CASES, ids=[case[0].__name__ for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(prepared: Path, tmp_path: Path, breaker, command):
    root = tmp_path / "project"
    shutil.copytree(prepared, root)
    expected = breaker(root)
    before = snapshot(root, "runs", "indexes")
    result = invoke("--config", str(root / "data/cisctool.toml"), "--set", f'workdir="{root}"', *command)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) >= 1 and lines[-1].startswith("Error: "), result.output
    assert expected in " ".join(line.strip() for line in lines[-3:]), result.output
    assert "Traceback" not in result.output
    assert snapshot(root, "runs", "indexes") == before


def test_a_predicted_class_no_labeled_image_has_is_reported_not_fatal(prepared: Path, tmp_path: Path):
    """Such a class gets no CISC evidence (S_ŷ undefined, label kept), counted in the report."""
    root = tmp_path / "project"
    shutil.copytree(prepared, root)
    index_files = (root / "indexes/demo/round0.faiss", root / "indexes/demo/round0.json")
    prototype_index = load_index(*index_files)
    with PseudoLabels(root / "runs/demo/round1/pseudo.h5") as stored:  # the class guided most often
        forgotten = int(np.argmax((stored.guides >= 0).sum(axis=0)))
    assert forgotten > 0
    keep = prototype_index.classes != forgotten  # as if no labeled image had it
    rebuilt = build_index(
        stored_vectors(prototype_index)[keep], prototype_index.rows[keep], prototype_index.classes[keep],
        prototype_index.areas[keep], prototype_index.image_ids, "Flat",
    )  # fmt: skip
    rebuilt.metadata = {**prototype_index.metadata, **rebuilt.metadata}
    save_index(rebuilt, *index_files)
    config = load_config(root / "data/cisctool.toml", {"workdir": str(root)})
    outcome = rectify_round(config, 1, "cpu", force=True)
    assert outcome.report["queries"]["unguided"] > 0
    with PseudoLabels(outcome.path) as stored:
        for index in range(len(stored)):
            pixels = stored.pixels("raw_label", index) == forgotten
            assert np.isnan(stored.pixels("cisc", index)[pixels].astype(np.float32)).all()
            assert (stored.pixels("label", index)[pixels] == forgotten).all()
