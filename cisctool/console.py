"""One rich console for the whole tool; `-q` silences progress and tables, `-v` adds detail."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(highlight=False)
_warnings = Console(stderr=True, highlight=False, soft_wrap=True)
VERBOSITY = {"level": 0}


def set_verbosity(level: int) -> None:
    """−1 quiet, 0 normal, 1 verbose."""
    VERBOSITY["level"] = level
    console.quiet = level < 0


def warn(message: str) -> None:
    """One `warning: …` line on stderr, shown even with `-q`: something the user must act on."""
    _warnings.print(f"[yellow]warning:[/yellow] {message}")


def verbose() -> bool:
    return VERBOSITY["level"] > 0


def progress_bar(*extra_columns: ProgressColumn) -> Progress:
    """A progress bar with count, elapsed and remaining time; plain when output is not a TTY."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=console.quiet,
    )


class RateColumn(ProgressColumn):
    """Items per second of a task, e.g. `12.3 img/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"– {self.unit}/s")
