from pathlib import Path

from cisctool.store.history import read_json


def test_a_written_json_file_is_read_back(tmp_path: Path):
    path = tmp_path / "metrics.json"
    path.write_text('{"val": {"mean_iou": 0.5}}')
    assert read_json(path) == {"val": {"mean_iou": 0.5}}


def test_a_missing_or_half_written_file_reads_as_empty(tmp_path: Path):
    broken = tmp_path / "pseudo_quality.json"
    broken.write_text('{"raw_miou": 0.')
    assert read_json(tmp_path / "absent.json") == {}
    assert read_json(broken) == {}
