"""What `make demo` scores and how long it takes, per training seed: the record behind the demo's figures.

    python benchmarks/demo_seeds.py [--seeds 0,1,2] [--workdir DIR] [--device cpu|cuda]

For each seed S, in a fresh folder DIR/seed-S (removed first), runs `make demo`'s pipeline as
the user runs it: `cisctool --set train.seed=S demo` (demo data, round 0, index, rectify,
rounds 1 and 2, the report), in its own process. Then reads each round's metrics.json and
writes a record with each round's val mIoU, its training seconds and its wall time: the time
from the previous round's metrics.json (round 0: from the start, the demo data's generation
included) to its own, so a round's wall time holds its index and rectify passes as well.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from records import progress, write_record

ROOT = Path(__file__).resolve().parent
CISCTOOL = Path(sys.executable).with_name("cisctool")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--device", default=None, help="passed to `cisctool demo --device` (default: its own)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "demo_seeds")
    args = parser.parse_args()
    runs = {}
    for seed in (int(item) for item in args.seeds.split(",")):
        runs[str(seed)] = run_seed(seed, args.workdir / f"seed-{seed}", args.device)
        rounds = runs[str(seed)]["rounds"]
        progress(f"seed {seed}: val mIoU by round {[round(row['val_miou'], 2) for row in rounds]}, "
                 f"{runs[str(seed)]['wall_seconds']:.0f} s")  # fmt: skip
    print(f"wrote {write_record('demo-seeds', {'seeds': runs})}")


def run_seed(seed: int, folder: Path, device: str | None) -> dict:
    """`cisctool --set train.seed=S demo` in `folder`; its rounds' val mIoU, training and wall seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [str(CISCTOOL), "--quiet", "--set", f"train.seed={seed}", "demo"]
    if device:
        command += ["--device", device]
    started = time.time()
    subprocess.run(command, cwd=folder, check=True)
    wall = time.time() - started
    rounds, previous = [], started
    for path in sorted(folder.glob("**/round*/metrics.json"), key=lambda found: int(found.parent.name[5:])):
        metrics = json.loads(path.read_text())
        finished = path.stat().st_mtime
        rounds.append({
            "round": metrics["round"], "val_miou": 100 * metrics["val"]["mean_iou"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": finished - previous,
        })  # fmt: skip
        previous = finished
    return {"command": " ".join(["cisctool", *command[1:]]), "rounds": rounds, "wall_seconds": wall,
            "report_seconds": started + wall - previous}  # fmt: skip


if __name__ == "__main__":
    main()
