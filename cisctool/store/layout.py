"""Where each round's artifacts live, relative to `workdir`:

    runs/<name>/config.resolved.toml
    runs/<name>/round<N>/{model.pt, last.pt, metrics.json, train.log, pseudo.h5, pseudo_quality.json}
    indexes/<name>/round<N>.faiss + round<N>.json
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cisctool.config import Config


def _round_file(name: str, description: str) -> Callable[["RunLayout", int], Path]:
    """A RunLayout method: the path of file `name` in round N's folder."""

    def path(layout: "RunLayout", round_index: int) -> Path:
        return layout.round_dir(round_index) / name

    path.__doc__ = description
    return path


@dataclass(frozen=True)
class RunLayout:
    """Paths of one named run's artifacts."""

    workdir: Path
    name: str

    @classmethod
    def of(cls, config: Config) -> "RunLayout":
        return cls(Path(config.workdir), config.name)

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.name

    @property
    def resolved_config(self) -> Path:
        return self.run_dir / "config.resolved.toml"

    def round_dir(self, round_index: int) -> Path:
        return self.run_dir / f"round{round_index}"

    model = _round_file("model.pt", "The round's final model (never best-on-val).")
    last = _round_file("last.pt", "Full training state for `--resume`.")
    metrics = _round_file("metrics.json", "The round's steps, loss and val scores.")
    train_log = _round_file("train.log", "The losses every `log_every` steps.")
    pseudo = _round_file("pseudo.h5", "Pseudo labels *for* round N (made with round N−1's model and index).")
    pseudo_quality = _round_file("pseudo_quality.json", "The quality report of round N's pseudo labels, beside `pseudo.h5`.")

    @property
    def index_dir(self) -> Path:
        return self.workdir / "indexes" / self.name

    def index_files(self, round_index: int) -> tuple[Path, Path]:
        """(`.faiss`, `.json`) of the index built from round N's model."""
        stem = self.index_dir / f"round{round_index}"
        return stem.with_suffix(".faiss"), stem.with_suffix(".json")
