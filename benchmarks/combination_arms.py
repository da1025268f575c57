"""Does a combination of CISC-R with another pseudo-label rule beat CISC-R? Extra arms on finished runs' round 0.

    python benchmarks/combination_arms.py --kind shapes --arm NAME:KEY=VALUE[,KEY=VALUE] [--arm …]
                                          [--seeds 0,1,2,3,4] [--workdir DIR] [--device cpu]

Reads the runs `minimal_config.py` left of the benchmark config (`<workdir>/<kind>-benchmark/runs/
<name>-s<seed>`, made by `run --rounds 2` on `<workdir>/data-<kind>`; run it first). For each arm
and seed, a new run `<name>-s<seed>-<arm>` in the same workdir gets a copy of that run's round 0
(the SupOnly model, as `compare` shares it) and continues it with `run --rounds R` and the arm's
keys (`--set`). So every arm of a seed continues the same round-0 model as CISC-R did, and the
per-seed difference arm − CISC-R (the benchmark run's final round) is paired. Writes each seed's
final val mIoU, the paired differences as mean ± std and the seeds on which the arm is ahead.
Runs resume: a killed benchmark redoes only unfinished steps. Thread counts change results; run it
with the thread count the benchmark runs had (the default, on the same machine).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from cisctool.steps.compare import mean_std

from records import progress, write_record

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="shapes", choices=["shapes", "aerial"])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arm", dest="arms", action="append", required=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "minimal_config")
    args = parser.parse_args()
    config = args.workdir / f"data-{args.kind}" / "cisctool.toml"
    runs = args.workdir / f"{args.kind}-benchmark"
    name = tomllib.loads(config.read_text())["name"]
    arms = {arm.partition(":")[0]: arm.partition(":")[2].split(",") for arm in args.arms}
    seeds = [int(item) for item in args.seeds.split(",")]
    finals: dict[str, list[float]] = {"cisc": [], **{arm: [] for arm in arms}}
    for seed in seeds:
        source = runs / "runs" / f"{name}-s{seed}"
        finals["cisc"].append(final_miou(source, args.rounds))
        for arm, settings in arms.items():
            target = runs / "runs" / f"{name}-s{seed}-{arm}"
            if not (target / "round0" / "model.pt").is_file():
                shutil.rmtree(target / "round0", ignore_errors=True)
                shutil.copytree(source / "round0", target / "round0")
            command = [sys.executable, "-m", "cisctool", "--quiet", "--config", str(config),
                       "--set", f"workdir={json.dumps(str(runs))}", "--set", f"name={json.dumps(target.name)}",
                       "--set", f"train.seed={seed}", *(item for setting in settings for item in ("--set", setting)),
                       "run", "--rounds", str(args.rounds), "--device", args.device]  # fmt: skip
            subprocess.run(command, check=True)
            finals[arm].append(final_miou(target, args.rounds))
        figures = ", ".join(f"{arm} {values[-1]:.2f}" for arm, values in finals.items())
        progress(f"seed {seed}: final val mIoU {figures}")
    paired = {}
    for arm in arms:
        differences = [value - base for value, base in zip(finals[arm], finals["cisc"], strict=True)]
        paired[f"{arm} - cisc"] = {"per_seed": differences, "mean_std": mean_std(differences),
                                   "ahead": f"{sum(d > 0 for d in differences)}/{len(seeds)}"}  # fmt: skip
    payload = {
        "what": "final val mIoU (points) after `run --rounds R` of CISC-R (the benchmark config) and of extra arms "
                "that continue the same seed's round-0 model with the arm's keys set; paired differences arm − cisc",
        "kind": args.kind, "seeds": seeds, "rounds": args.rounds, "arms": arms, "source_runs": str(runs),
        "final_val_miou": finals, "mean_std": {arm: mean_std(values) for arm, values in finals.items()},
        "paired": paired,
    }  # fmt: skip
    progress(json.dumps({"mean_std": payload["mean_std"], "paired": paired}))
    print(f"wrote {write_record(f'combination-arms-{args.kind}', payload, args.device)}")


def final_miou(run: Path, rounds: int) -> float:
    """The run's val mIoU after round `rounds`, in points."""
    return 100 * json.loads((run / f"round{rounds}" / "metrics.json").read_text())["val"]["mean_iou"]


if __name__ == "__main__":
    main()
