"""Resolution ceilings: what a perfect stride-S prediction keeps of each class, and the thin-class advice."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

from cisctool.cli.main import main
from cisctool.config import load_config, with_overrides
from cisctool.data.demo import make_demo
from cisctool.report.resolution import resolution_ceilings, thin_classes

IGNORE = 255


def line_and_block_mask() -> np.ndarray:
    """64×64: class 1 a 2 px column (x 30–31, one stride-2 block), class 2 a 16×16 block on the stride-4 grid."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 30:32] = 1
    mask[40:56, 4:20] = 2
    return mask


def test_a_2_px_line_survives_stride_2_and_vanishes_at_stride_4():
    ceilings = resolution_ceilings([line_and_block_mask()], 4, IGNORE, [1, 2, 4])
    assert ceilings[1][:3] == [1.0, 1.0, 1.0]
    # stride 2: the line's block upsamples to 0.75 on both of its columns, so every pixel is kept
    assert ceilings[2][1] == pytest.approx(1.0)
    # stride 4: the line is half of its 4 px block, 0.44 after upsampling, and loses to background
    assert ceilings[4][1] == 0.0
    assert 0.8 < ceilings[4][2] < 1.0  # the block loses only its blurred corners
    assert math.isnan(ceilings[4][3])  # a class in no mask has no ceiling


def test_ignored_pixels_count_for_nothing():
    mask = line_and_block_mask()
    with_ignore = mask.copy()
    with_ignore[:, 60:] = IGNORE
    plain = resolution_ceilings([mask], 3, IGNORE, [4])[4]
    ignored = resolution_ceilings([with_ignore], 3, IGNORE, [4])[4]
    assert ignored[1:] == plain[1:]


def test_thin_classes_names_each_class_stride_4_mostly_loses(tmp_path):
    config = with_overrides(load_config(make_demo(tmp_path / "demo", num_labeled=2, num_unlabeled=1, num_val=1)),
                            {"data.class_names": ["ground", "road", "lake", "tree", "field", "river"]})  # fmt: skip
    ceilings = {4: [0.96, 0.43, 0.93, float("nan"), 0.50, 0.49], 2: [0.99, 0.84, 0.98, float("nan"), 0.9, 0.8]}
    lines = thin_classes(config, ceilings)
    assert len(lines) == 2
    assert lines[0].startswith("class 'road': a perfect stride-4 prediction keeps 43 %")
    assert "(stride 2: 84 %)" in lines[0] and "model.decoder_stride = 2" in lines[0]
    assert lines[1].startswith("class 'river'")
    assert thin_classes(with_overrides(config, {"model.decoder_stride": 2}), ceilings) == []


@pytest.mark.parametrize(("kind", "warned"), [("aerial", True), ("shapes", False)])
def test_data_check_warns_about_the_aerial_roads_only(tmp_path, kind, warned):
    config = make_demo(tmp_path / kind, num_unlabeled=1, num_val=1, kind=kind)  # the kind's labeled set
    result = CliRunner().invoke(main, ["--config", str(config), "data", "check"])
    assert result.exit_code == 0, result.output
    assert "resolution ceiling" in result.output
    assert ("warning: class 'road'" in result.output) is warned
    assert ("warning:" in result.output) is warned
