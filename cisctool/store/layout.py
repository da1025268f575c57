"""Where each round's artifacts live, relative to `workdir`:

    runs/<name>/config.resolved.toml
    runs/<name>/round<N>/{model.pt, last.pt, metrics.json, train.log, pseudo.h5, pseudo_quality.json}
    indexes/<name>/round<N>.faiss + round<N>.json
"""

from dataclasses import dataclass
from pathlib import Path

from cisctool.config import Config


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

    def model(self, round_index: int) -> Path:
        """The round's final model (never best-on-val)."""
        return self.round_dir(round_index) / "model.pt"

    def last(self, round_index: int) -> Path:
        """Full training state for `--resume`."""
        return self.round_dir(round_index) / "last.pt"

    def metrics(self, round_index: int) -> Path:
        return self.round_dir(round_index) / "metrics.json"

    def train_log(self, round_index: int) -> Path:
        return self.round_dir(round_index) / "train.log"

    def pseudo(self, round_index: int) -> Path:
        """Pseudo labels *for* round N (made with round N−1's model and index)."""
        return self.round_dir(round_index) / "pseudo.h5"

    def pseudo_quality(self, round_index: int) -> Path:
        """The quality report of round N's pseudo labels, beside `pseudo.h5`."""
        return self.round_dir(round_index) / "pseudo_quality.json"

    @property
    def index_dir(self) -> Path:
        return self.workdir / "indexes" / self.name

    def index_files(self, round_index: int) -> tuple[Path, Path]:
        """(`.faiss`, `.json`) of the index built from round N's model."""
        stem = self.index_dir / f"round{round_index}"
        return stem.with_suffix(".faiss"), stem.with_suffix(".json")
