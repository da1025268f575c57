"""The review loop through a real Label Studio server: our tasks in, a corrected mask out, then `data import`.

The `label-studio` package lives in its own virtual environment (`.ls-venv`, made by
.ci/run), so its dependencies never meet ours. The server listens on 127.0.0.1 only,
keeps its SQLite database in a temporary folder and is stopped at the end.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST_TRAINING

from cisctool.cli.main import main
from cisctool.data.labelstudio import rle_decode, rle_encode
from cisctool.data.masks import read_mask
from cisctool.store.pseudo_labels import PseudoLabels

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / ".ls-venv/bin/label-studio"
TOKEN = "cisctool-test-token-0123456789abcdef"
START_TIMEOUT_S = 240  # first start migrates a fresh SQLite database
CLASSES = ["background", "disc", "square", "triangle", "ring", "cross"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LabelStudio:
    """A running server and its REST API (token authentication)."""

    def __init__(self, url: str, version: str, start_seconds: float) -> None:
        self.url, self.version, self.start_seconds = url, version, start_seconds

    def call(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Token {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode()[:2000]
            raise AssertionError(f"{method} {path}: HTTP {error.code}: {detail}") from None
        return json.loads(text) if text else None


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> str:
    """Poll the version endpoint until the server answers; its version."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"label-studio exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=5) as response:
                return json.loads(response.read())["release"]
        except (urllib.error.URLError, ConnectionError, OSError, ValueError, KeyError):
            time.sleep(1.0)
    pytest.fail(f"label-studio did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def label_studio(tmp_path: Path) -> Iterator[LabelStudio]:
    if not SERVER.is_file():
        reason = f"{SERVER} missing: make .ls-venv and pip install label-studio into it (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI promises the real server: a skip would hide its absence
        pytest.skip(reason)
    home = tmp_path / "label-studio"
    home.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(home),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "HOME": str(home),
    }
    log = home / "server.log"
    command = [
        str(SERVER), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(home / "data"), "--username", "reviewer@example.com", "--password", "review-pass-1",
        "--user-token", TOKEN,
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        version = _wait_until_up(url, process, log)
        yield LabelStudio(url, version, time.monotonic() - started)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def cli(data: Path, *words: str):
    settings = {"workdir": str(data.parent / "work"), **FAST_TRAINING}
    flags = [item for key, value in settings.items() for item in ("--set", f"{key}={json.dumps(value)}")]
    return CliRunner().invoke(main, ["--config", str(data / "cisctool.toml"), *flags, *words])


def _mask_of(results: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """A task's brush results as class indices (255 where unpainted), by our reader of Label Studio's RLE."""
    mask = np.full(shape, 255, dtype=np.uint8)
    for result in results:
        assert (result["original_height"], result["original_width"]) == shape
        (name,) = result["value"]["brushlabels"]
        mask[rle_decode(result["value"]["rle"], *shape)] = CLASSES.index(name)
    return mask


def _annotation(prediction: list[dict], mask: np.ndarray) -> list[dict]:
    """The prediction's brush results redrawn from `mask` (one per class), as a reviewer leaves them."""
    frame = {key: value for key, value in prediction[0].items() if key not in ("id", "value")}
    return [
        {
            **frame,
            "id": f"edit{cls}",
            "value": {"format": "rle", "rle": rle_encode(mask == cls), "brushlabels": [CLASSES[cls]]},
        }
        for cls in np.unique(mask).tolist()
        if cls < len(CLASSES)
    ]


@pytest.mark.slow
def test_label_studio_server_round_trip(label_studio, reviewed_workdir: Path, demo_dir: Path, tmp_path: Path):
    data, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(demo_dir, data)
    shutil.copytree(reviewed_workdir, work)
    tasks_file = tmp_path / "tasks.json"
    result = cli(
        data, "export", "--round", "1", "--format", "labelstudio", "--worst", "3", "--out", str(tasks_file)
    )
    assert result.exit_code == 0, result.output
    tasks = json.loads(tasks_file.read_text())
    with PseudoLabels(work / "runs/demo/round1/pseudo.h5") as stored:
        ours = {image_id: stored.pixels("label", index) for index, image_id in enumerate(stored.ids)}

    server = label_studio
    config_xml = tasks_file.with_name("tasks.label_config.xml").read_text()
    project = server.call("POST", "/api/projects", {"title": "cisctool review", "label_config": config_xml})
    imported = server.call("POST", f"/api/projects/{project['id']}/import", tasks)
    assert imported["task_count"] == 3 and imported["prediction_count"] == 3, imported

    # the predictions as the server stores and serves them: our masks, pixel for pixel
    every_task = f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true"
    served = server.call("GET", every_task)
    assert [task["data"]["cisctool_id"] for task in sorted(served, key=lambda t: t["id"])] == [
        task["data"]["cisctool_id"] for task in tasks
    ]  # task ids follow the review order
    predictions = {}
    for task in served:
        image_id = task["data"]["cisctool_id"]
        (prediction,) = server.call("GET", f"/api/predictions/?task={task['id']}")
        predictions[task["id"]] = prediction
        assert prediction["score"] == pytest.approx(task["data"]["review_score"])
        assert np.array_equal(_mask_of(prediction["result"], ours[image_id].shape), ours[image_id])

    # a reviewer accepts the first task's prediction but repaints a square as `ring`
    first = min(served, key=lambda t: t["id"])
    image_id, shape = first["data"]["cisctool_id"], ours[first["data"]["cisctool_id"]].shape
    region = np.zeros(shape, bool)
    region[4:20, 6:30] = True
    changed = ours[image_id].copy()
    changed[region] = CLASSES.index("ring")
    results = _annotation(predictions[first["id"]]["result"], changed)
    assert np.array_equal(_mask_of(results, shape), changed)
    server.call("POST", f"/api/tasks/{first['id']}/annotations", {"result": results, "was_cancelled": False})

    exported = server.call("GET", f"/api/projects/{project['id']}/export?exportType=JSON")
    assert [task["id"] for task in exported] == [first["id"]]  # only annotated tasks, as Label Studio exports
    export_file = tmp_path / "project-export.json"
    export_file.write_text(json.dumps(exported))
    split = data / "splits/reviewed.txt"
    result = cli(data, "data", "import", "--format", "labelstudio", str(export_file), "--out", str(split))
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_mask(data / f"reviewed/{image_id}.png"), changed)
    assert not np.array_equal(changed, ours[image_id])  # the edit changed something
    print(f"Label Studio {server.version}: server up in {server.start_seconds:.1f} s")
