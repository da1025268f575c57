"""One rich console for the whole tool; `-q` silences progress and tables, `-v` adds detail."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(highlight=False)
VERBOSITY = {"level": 0}


def set_verbosity(level: int) -> None:
    """−1 quiet, 0 normal, 1 verbose."""
    VERBOSITY["level"] = level
    console.quiet = level < 0


def verbose() -> bool:
    return VERBOSITY["level"] > 0


def progress_bar(*extra_columns: TextColumn) -> Progress:
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
