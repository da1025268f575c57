"""The HTML report: written from a real run folder, opened in a real headless Chromium."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST_TRAINING

from cisctool.cli.main import main
from cisctool.config import Config, load_config
from cisctool.data.splits import split_entries
from cisctool.method.review import images_at, review_order
from cisctool.report.review import measure_efficiency, review_scores, true_wrong_pixels
from cisctool.steps.report import write_report
from cisctool.store.history import read_losses
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium as root in a container, with nothing that reaches out to the network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The README's screenshot: `CISCTOOL_REPORT_SCREENSHOT=docs/report.png pytest tests/test_report.py`
SCREENSHOT_ENV = "CISCTOOL_REPORT_SCREENSHOT"


@pytest.fixture
def run_config(reviewed_workdir: Path, demo_dir: Path, tmp_path: Path) -> Config:
    """The reviewed run, copied so that reports can be written into it."""
    shutil.copytree(reviewed_workdir, tmp_path / "work")
    return load_config(demo_dir / "cisctool.toml", {"workdir": str(tmp_path / "work"), **FAST_TRAINING})


def open_in_chromium(page_path: Path, screenshot: Path) -> dict:
    """Load the page from disk; return what it shows and every console message, page error and failed load."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the `playwright` package (the dev extra) drives Chromium"
    )
    problems: list[str] = []
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            shown = page.evaluate(
                """() => ({
                    images: Array.from(document.images).map(image => [image.getAttribute('src'), image.complete,
                                                                     image.naturalWidth]),
                    gallery: Array.from(document.querySelectorAll('figure.review')).map(figure => [
                        figure.dataset.id, Number(figure.dataset.score)]),
                    at10: (element => element && {images: Number(element.dataset.images),
                        tool: Number(element.dataset.tool), random: Number(element.dataset.random),
                        oracle: Number(element.dataset.oracle), text: element.innerText})(
                        document.getElementById('review-at-10')),
                    curve: (image => image && [image.complete, image.naturalWidth])(
                        document.getElementById('review-curve')),
                    sections: Array.from(document.querySelectorAll('h2')).map(heading => heading.id),
                    round_columns: Array.from(document.querySelectorAll('table.run thead th')).map(
                        cell => cell.textContent.trim()),
                    round_rows: Array.from(document.querySelectorAll('table.run tbody tr')).map(
                        row => Array.from(row.cells).map(cell => cell.textContent.trim())),
                })"""
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {**shown, "problems": problems}


@pytest.mark.slow
def test_report_opens_in_chromium_with_the_review_curve_and_the_review_order(run_config: Config, tmp_path: Path):
    outcome = write_report(run_config, gallery=4)
    assert (
        outcome.path == RunLayout.of(run_config).run_dir / "report/index.html" and outcome.pseudo_round == 1
    )
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "report.png")
    shown = open_in_chromium(outcome.path, screenshot)

    assert shown["problems"] == []
    assert shown["sections"] == ["rounds", "iou", "losses", "signals", "review", "gallery", "config"]
    plots = {"plots/iou.png", "plots/losses.png", "plots/roc.png", "plots/reliability.png", "plots/review.png"}
    assert plots <= {source for source, _, _ in shown["images"]}
    for source, complete, width in shown["images"]:
        assert complete and width > 0, source
    assert shown["curve"][0] and shown["curve"][1] > 0
    # what the page shows is what the pseudo file and the unlabeled masks give
    unlabeled = split_entries(run_config, "unlabeled", masks_required=True)
    with PseudoLabels(RunLayout.of(run_config).pseudo(1)) as stored:
        scores = review_scores(stored, run_config.data.ignore_index)
        expected = [stored.ids[index] for index in review_order(scores)[:4]]
        wrong = true_wrong_pixels(stored, {e.id: e.mask for e in unlabeled}, run_config.data.ignore_index)
    assert [image_id for image_id, _ in shown["gallery"]] == expected
    shown_scores = [value for _, value in shown["gallery"]]
    assert shown_scores == sorted(shown_scores, reverse=True) and shown_scores[0] == pytest.approx(scores.max())
    measured = measure_efficiency(scores, wrong)
    at10 = shown["at10"]
    assert at10["images"] == images_at(0.10, len(scores))
    assert at10["tool"] == pytest.approx(measured.tool[at10["images"]])
    assert at10["oracle"] == pytest.approx(measured.oracle[at10["images"]])
    assert at10["random"] == pytest.approx(at10["images"] / len(scores))
    assert f"finds {100 * at10['tool']:.1f} % of all wrong" in at10["text"]
    assert 0 < at10["tool"] <= at10["oracle"] <= 1
    assert screenshot.stat().st_size > 10_000
    check_round_table(shown, RunLayout.of(run_config))


def check_round_table(shown: dict, layout: RunLayout) -> None:
    """The round table as the browser shows it carries each round's metrics.json and pseudo_quality.json."""
    table = [dict(zip(shown["round_columns"], row, strict=True)) for row in shown["round_rows"]]
    assert [row["round"] for row in table] == ["0", "1"]
    for row in table:
        metrics = json.loads(layout.metrics(int(row["round"])).read_text())
        assert int(row["steps"]) == metrics["steps"]
        assert float(row["final loss"]) == pytest.approx(metrics["final_loss"], abs=5e-5)
        assert float(row["val mIoU %"]) == pytest.approx(100 * metrics["val"]["mean_iou"], abs=0.005)
        assert float(row["train s"]) == pytest.approx(metrics["train_seconds"], abs=0.5)
    quality = json.loads(layout.pseudo_quality(1).read_text())
    assert float(table[1]["pseudo mIoU % raw"]) == pytest.approx(100 * quality["raw_miou"], abs=0.005)
    assert float(table[1]["rectified"]) == pytest.approx(100 * quality["rectified_miou"], abs=0.005)
    assert table[0]["pseudo mIoU % raw"] == "—"  # round 0 trains on no pseudo labels


def test_report_command_replaces_its_own_folder_and_refuses_others(
    run_config: Config, demo_dir: Path, tmp_path: Path
):
    config = str(demo_dir / "cisctool.toml")
    flags = ["--config", config, "--set", f"workdir={json.dumps(str(tmp_path / 'work'))}"]
    flags += [
        item for key, value in FAST_TRAINING.items() for item in ("--set", f"{key}={json.dumps(value)}")
    ]
    out = tmp_path / "review"
    runner = CliRunner()
    for _ in range(2):  # the second run replaces the first report
        result = runner.invoke(main, [*flags, "report", "--out", str(out), "--gallery", "2"])
        assert result.exit_code == 0, result.output
        assert "index.html" in result.output and "2 images with the highest review score" in result.output
    assert sorted(path.name for path in (out / "gallery").iterdir()) == ["0001.png", "0002.png"]
    assert not list(tmp_path.glob(".review.*"))  # no temporary folder left behind

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep me")
    result = runner.invoke(main, [*flags, "report", "--out", str(tmp_path / "mine")])
    assert result.exit_code == 2 and "mine: exists and is not a cisctool report" in result.output
    assert (tmp_path / "mine/notes.txt").read_text() == "keep me"
    result = runner.invoke(main, [*flags, "report", "--round", "2"])
    assert result.exit_code == 2 and "no pseudo labels for round 2" in result.output


def test_report_of_a_run_without_pseudo_labels_has_no_gallery(run_config: Config):
    layout = RunLayout.of(run_config)
    shutil.rmtree(layout.round_dir(1))
    outcome = write_report(run_config)
    html = outcome.path.read_text()
    assert outcome.pseudo_round is None and outcome.gallery == 0
    assert 'id="rounds"' in html and 'id="gallery"' not in html and "plots/losses.png" in html


def test_loss_curves_keep_the_last_line_of_a_step_a_resumed_run_repeats(tmp_path: Path):
    log = tmp_path / "train.log"
    log.write_text(
        "pseudo-labeled images: 3 of 6 (rectify.select = reliable)\n"
        "step 1/3 loss 2.0000 ce 1.5000 consistency 0.5000 pseudo 0.0000 lr 1.000e-02\n"
        "step 2/3 loss 1.0000 ce 0.7000 consistency 0.3000 pseudo 0.0000 lr 5.000e-03\n"
        "step 2/3 loss 1.2500 ce 0.9000 consistency 0.3500 pseudo 0.0000 lr 5.000e-03\n"
        "step 3/3 loss 0.5000 ce 0.4000 consistency 0.1000 pseudo 0.0000 lr 0.000e+00\n"
    )
    curves = read_losses(log)
    assert curves["loss"] == [(1, 2.0), (2, 1.25), (3, 0.5)]
    assert set(curves) == {"loss", "ce", "consistency", "pseudo"} and curves["ce"][1] == (2, 0.9)
    assert read_losses(tmp_path / "missing.log") == {}


def test_report_without_unlabeled_masks_estimates_wrong_pixels_calibrated_on_val(
    reviewed_workdir: Path, demo_dir: Path, tmp_path: Path
):
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    split = data / "splits/unlabeled.txt"
    split.write_text("".join(line.split()[0] + "\n" for line in split.read_text().splitlines() if line.strip()))
    shutil.copytree(reviewed_workdir, tmp_path / "work")
    config = load_config(data / "cisctool.toml", {"workdir": str(tmp_path / "work"), **FAST_TRAINING})
    outcome = write_report(config, gallery=3)
    html = outcome.path.read_text()
    assert 'id="review-curve"' not in html and "plots/review.png" not in html
    factor = float(html.split('id="review-estimate" data-factor="')[1].split('"')[0])
    val = split_entries(config, "val")
    assert factor > 0 and f"predicts the {len(val)} val images" in html
    with PseudoLabels(RunLayout.of(config).pseudo(1)) as stored:
        scores = review_scores(stored, config.data.ignore_index)
    first = int(np.argmax(scores))
    assert f"estimated wrong pixels {factor * scores[first]:.0f}" in html and "wrong vs mask" not in html
