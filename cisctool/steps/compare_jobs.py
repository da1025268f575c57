"""`compare --jobs N`: the comparison's runs as N `cisctool run` processes at once.

One small run leaves most of a GPU idle (on an H100, the 50 runs of a 5-seed
comparison on both benchmark configs went 20 at once and took 491 s in all), so
each run of the comparison can be its own process: a seed's shared round 0 first,
then its arms, each arm starting as soon as its round 0 is done. Each process
gets the resolved config of its run (written to `runs/<run>/compare-config.toml`)
and an equal share of the CPU threads, and logs to `runs/<run>/compare.log`.
The runs resume like any `run`, so the in-process pass that `compare` makes
afterwards only reads their results.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cisctool.config import Config, to_toml
from cisctool.console import console, progress_bar
from cisctool.errors import InputError
from cisctool.store.layout import RunLayout

POLL_SECONDS = 0.5
ShareRound0 = Callable[[Config, Config], None]


@dataclass
class Job:
    """One `cisctool run` of the comparison; `after` is the run whose round 0 it continues."""

    config: Config
    rounds: int
    after: Config | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def run_dir(self) -> Path:
        return RunLayout.of(self.config).run_dir

    @property
    def config_file(self) -> Path:
        return self.run_dir / "compare-config.toml"

    @property
    def log(self) -> Path:
        return self.run_dir / "compare.log"


def run_command(job: Job, device: str) -> list[str]:
    """The process that runs one job: `python -m cisctool` on the job's resolved config."""
    return [sys.executable, "-m", "cisctool", "--config", str(job.config_file),
            "run", "--rounds", str(job.rounds), "--device", device]  # fmt: skip


def thread_environment(jobs: int) -> dict[str, str]:
    """The parent's environment with the CPU threads split between the jobs (unless the user set them)."""
    environment = dict(os.environ)
    if "OMP_NUM_THREADS" not in environment:
        environment["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return environment


def run_jobs(jobs: list[Job], parallel: int, device: str, share_round0: ShareRound0) -> None:
    """Run `jobs`, at most `parallel` at once, each after its `after` run; raise naming the first failure's log.

    `share_round0(shared, arm)` copies a finished round 0 into an arm's folder before the arm starts.
    """
    environment = thread_environment(parallel)
    pending = list(jobs)
    running: dict[str, tuple[Job, subprocess.Popen, float]] = {}
    finished: set[str] = set()
    failed: dict[str, str] = {}
    try:
        with progress_bar() as bar:
            task = bar.add_task(f"compare runs ({parallel} at once)", total=len(jobs))
            while pending or running:
                for job in list(pending):
                    blocker = job.after.name if job.after is not None else None
                    if blocker in failed:
                        pending.remove(job)
                        failed[job.name] = f"not started: its round 0 ({blocker}) failed"
                        bar.advance(task)
                    elif len(running) < parallel and (blocker is None or blocker in finished):
                        pending.remove(job)
                        running[job.name] = (job, _start(job, device, environment, share_round0), time.perf_counter())
                for name, (job, process, started) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[name]
                    bar.advance(task)
                    seconds = time.perf_counter() - started
                    if process.returncode == 0:
                        finished.add(name)
                        console.print(f"{name}: done in {seconds:.0f} s")
                    else:
                        failed[name] = f"{job.log}: `cisctool run` of {name} exited with {process.returncode}"
                        console.print(f"{name}: failed, see {job.log}")
                time.sleep(POLL_SECONDS)
    finally:
        for _, process, _ in running.values():  # interrupted: stop the children (their runs resume)
            process.terminate()
        for _, process, _ in running.values():
            process.wait()
    if failed:
        raise InputError(next(why for why in failed.values() if not why.startswith("not started")))


def _start(job: Job, device: str, environment: dict[str, str], share_round0: ShareRound0) -> subprocess.Popen:
    """Write the job's config (and give it its round 0), then start its process with output to its log."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    if job.after is not None:
        share_round0(job.after, job.config)
    job.config_file.write_text(to_toml(job.config))
    with open(job.log, "w") as log:
        return subprocess.Popen(run_command(job, device), stdout=log, stderr=subprocess.STDOUT, env=environment)
