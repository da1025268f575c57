"""The `cisctool` command: global options, one-line errors with distinct exit codes, and the commands.

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input, 130 interrupted, 143 preempted
(SIGTERM: the work so far saved, `cisctool.preemption`);
errors are one line naming the file or key and the problem. Every command
parses its options, calls one step (`cisctool.steps`) and prints what it wrote.
"""

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from cisctool import __version__
from cisctool.cli.data import data
from cisctool.cli.index import index
from cisctool.cli.model import eval_command, predict, train, tune
from cisctool.cli.options import parse_setting
from cisctool.cli.pseudo import export, rectify
from cisctool.cli.run import compare_command, demo, report, run_command
from cisctool.config import PROFILES
from cisctool.console import set_verbosity, verbose
from cisctool.errors import InputError, is_disk_full
from cisctool.preemption import PREEMPTED_EXIT, Preempted


class CisctoolGroup(click.Group):
    """Turns InputError into a one-line message with exit 2, anything else into exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as error:
            _fail(_one_line(error), 2)
        except KeyboardInterrupt:
            _fail("interrupted; finished files are intact, rerun with --resume to continue", 130)
        except Preempted as error:
            _fail(f"preempted (SIGTERM): {_one_line(error)}; {self._resume_hint(ctx)}", PREEMPTED_EXIT)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:  # a runtime failure: one line, the traceback only with -v
            if verbose():
                traceback.print_exc()
            if is_disk_full(error):
                where = f"{error.filename}: " if getattr(error, "filename", None) else ""
                _fail(f"{where}no space left on device; finished files are intact, free space "
                      "and rerun with --resume", 1)  # fmt: skip
            _fail(f"{type(error).__name__}: {_one_line(error)}", 1)

    def _resume_hint(self, ctx: click.Context) -> str:
        """How the interrupted command continues: with --resume where it has one, else as it was (`run`)."""
        command = self.get_command(ctx, ctx.invoked_subcommand or "")
        if command is not None and any(param.name == "resume" for param in command.params):
            return "rerun the same command with --resume to continue"
        return "rerun the same command to continue from there"


def _one_line(error: BaseException) -> str:
    """The last line of the message: DataLoader workers re-raise with the traceback prepended."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    prefix = f"{InputError.__module__}.{InputError.__name__}: "
    return text.removeprefix(prefix)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=CisctoolGroup)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="TOML config file [default: ./cisctool.toml].",
)  # fmt: skip
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.lr=0.01 (TOML values; repeatable).",
)  # fmt: skip
@click.option("--profile", type=click.Choice(list(PROFILES)), default=None,
              help="official: the paper's code choices (random guide, official weight, λ = 1, five-scale TTA, "
                   "rounds from scratch); --set still wins [default: the config's profile].")
@click.option("-v", "--verbose", "verbosity", flag_value=1, help="More detail; tracebacks on failure.")
@click.option("-q", "--quiet", "verbosity", flag_value=-1, help="No progress bars or tables.")
@click.version_option(__version__, prog_name="cisctool")
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    settings: tuple[str, ...],
    profile: str | None,
    verbosity: int | None,
) -> None:
    """cisctool: rectify pseudo labels with cross-image semantic consistency (CISC-R)."""
    from cisctool.steps.distributed import from_environment

    set_verbosity((verbosity or 0) if from_environment().is_main else -1)  # one voice under torchrun
    chosen = {"profile": profile} if profile else {}
    ctx.obj = {"config_path": config_path, "settings": {**chosen, **dict(parse_setting(item) for item in settings)}}


for command in (data, train, eval_command, tune, export, index, predict, rectify, compare_command, run_command,
                demo, report):  # fmt: skip
    main.add_command(command)

if __name__ == "__main__":
    main()
