"""Are the package defaults as good as the hand-set benchmark config? `run --rounds 2` with each, per seed.

    python benchmarks/minimal_config.py [--kind shapes] [--seeds 0,1,2,3,4] [--arm NAME:KEY=VALUE[,KEY=VALUE]]
                                        [--workdir DIR] [--device cpu]

The benchmark config is the one `cisctool data make-demo --kind KIND` writes. The minimal config
keeps only its `name`, `[data]` and `[model]` tables (backbone, pretrained file, output stride,
head channels) and `train.crop_size`: every other key is the package default, as in a config a
user writes for their own data. For each seed S both run `cisctool --set train.seed=S run
--rounds 2` on the same data, each in its own workdir (`cisctool run` skips finished steps, so a
killed benchmark resumes). Writes each seed's final val mIoU of both, the paired difference
(minimal − benchmark) as mean ± std with the number of seeds on which the minimal config is ahead,
and whether the mean difference lies within one seed-std of the benchmark config's results.
Each `--arm` adds the minimal config with those keys set (`--set`), paired the same way: which
of the keys the benchmark config sets by hand closes the gap.
"""

import argparse
import json
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
    parser.add_argument("--arm", dest="arms", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="the minimal config with these keys set, as one more arm")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "minimal_config")
    args = parser.parse_args()
    data = args.workdir / f"data-{args.kind}"
    if not (data / "cisctool.toml").is_file():
        subprocess.run([sys.executable, "-m", "cisctool", "data", "make-demo", str(data), "--kind", args.kind],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    configs = {"benchmark": data / "cisctool.toml", "minimal": data / "minimal.toml"}
    configs["minimal"].write_text(minimal_toml(tomllib.loads(configs["benchmark"].read_text())))
    arms = {"benchmark": (configs["benchmark"], []), "minimal": (configs["minimal"], [])}
    for arm in args.arms:
        name, _, settings = arm.partition(":")
        arms[name] = (configs["minimal"], settings.split(","))
    finals: dict[str, list[float]] = {name: [] for name in arms}
    seeds = [int(item) for item in args.seeds.split(",")]
    for seed in seeds:
        for name, (config, settings) in arms.items():
            finals[name].append(run_seed(config, settings, args.workdir / f"{args.kind}-{name}", seed, args))
        figures = ", ".join(f"{name} {values[-1]:.2f}" for name, values in finals.items())
        progress(f"seed {seed}: final val mIoU {figures}")
    summary = {name: mean_std(values) for name, values in finals.items()}
    paired = {}
    for name in list(arms)[1:]:
        differences = [value - benchmark for value, benchmark in zip(finals[name], finals["benchmark"])]
        mean = mean_std(differences)
        paired[f"{name} - benchmark"] = {
            "per_seed": differences, "mean_std": mean, "ahead": f"{sum(d > 0 for d in differences)}/{len(seeds)}",
            "within_one_seed_std": abs(mean[0]) <= summary["benchmark"][1],
        }  # fmt: skip
    payload = {
        "what": "final val mIoU (points) after `run --rounds R`, per seed, of the benchmark config, of a config "
                "holding only its [data], [model] and train.crop_size (minimal), and of the minimal config with "
                "the keys each extra arm sets; paired differences to the benchmark config",
        "kind": args.kind, "seeds": seeds, "rounds": args.rounds,
        "arms": {name: settings for name, (_, settings) in arms.items()}, "minimal_toml": configs["minimal"].read_text(),
        "final_val_miou": finals, "mean_std": summary, "paired": paired,
    }  # fmt: skip
    progress(json.dumps({"mean_std": summary, "paired": paired}))
    print(f"wrote {write_record(f'minimal-config-{args.kind}', payload, args.device)}")


def minimal_toml(benchmark: dict) -> str:
    """`name`, the `[data]` and `[model]` tables as the benchmark config has them, and `train.crop_size`."""
    lines = [f"name = {json.dumps(benchmark['name'] + '-minimal')}"]
    for table in ("data", "model"):
        lines += ["", f"[{table}]", *(f"{key} = {json.dumps(value)}" for key, value in benchmark[table].items())]
    lines += ["", "[train]", f"crop_size = {benchmark['train']['crop_size']}"]
    return "\n".join(lines) + "\n"


def run_seed(config: Path, settings: list[str], workdir: Path, seed: int, args: argparse.Namespace) -> float:
    """`cisctool run` of one config (`settings` as --set) and seed in `workdir`; the last round's val mIoU."""
    name = tomllib.loads(config.read_text())["name"] + f"-s{seed}"
    command = [sys.executable, "-m", "cisctool", "--quiet", "--config", str(config),
               "--set", f"workdir={json.dumps(str(workdir))}", "--set", f"name={json.dumps(name)}",
               "--set", f"train.seed={seed}", *(item for setting in settings for item in ("--set", setting)),
               "run", "--rounds", str(args.rounds), "--device", args.device]  # fmt: skip
    subprocess.run(command, check=True)
    metrics = json.loads((workdir / "runs" / name / f"round{args.rounds}" / "metrics.json").read_text())
    return 100 * metrics["val"]["mean_iou"]


if __name__ == "__main__":
    main()
