"""Pieces shared by the ``helioforge`` command modules: consoles, error exit, trainer options."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException
from rich.console import Console
from rich.markup import escape

from helioforge.config import describe_data_root, set_data_root
from helioforge.errors import HelioforgeError

#: Width given to a console that is not a terminal: wide enough that rich never wraps a message
#: or cuts a table cell (paths, file names and numbers stay whole, on one line, greppable).
LOG_WIDTH = 100_000


def make_console(stderr: bool) -> Console:
    """A rich console for stdout or stderr: normal on a terminal; elsewhere (a log, a pipe)
    without wrapping, without cutting table cells, and without colour codes."""
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c = Console(stderr=stderr, width=LOG_WIDTH, soft_wrap=True, no_color=True, highlight=False)
    return c


console = make_console(stderr=True)
out = make_console(stderr=False)

DATA = typer.Option(None, "--data", help="Data folder (default: $HELIOFORGE_DATA, else ../shared/data beside the "
                    "checkout, else the fetched full sample, else the embedded sample).", show_default=False)
ACCEL = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu.")
DEVICES = typer.Option("auto", "--devices", help="Number of devices (several GPUs use DDP).")


#: Errors shown as one line (``error: …``, exit 2) instead of a traceback; ``-v`` shows it too.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                PermissionError, RuntimeError, OSError)


class SafeGroup(TyperGroup):
    """The command group of ``helioforge``: a subcommand that raises prints one line naming the
    problem (:mod:`helioforge.errors` messages name the file and the remedy) and exits 2; Ctrl-C
    prints ``interrupted`` and exits 130; ``-v`` adds the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException, click.exceptions.Exit, click.ClickException, click.exceptions.Abort,
                SystemExit):
            raise
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: products being made were not marked finished; "
                          "rerun the command to resume")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the one place a raw traceback is turned into a line
            verbose = bool(ctx.params.get("verbose"))
            if verbose:
                console.print_exception()
            if isinstance(exc, (HelioforgeError, *USER_ERRORS)):
                text = str(exc).strip() or type(exc).__name__
                msg = text if isinstance(exc, HelioforgeError) else f"{text}" if ":" in text else f"{type(exc).__name__}: {text}"
            else:
                msg = f"internal error {type(exc).__name__}: {exc} (please report it; -v shows the traceback)"
            console.print(f"[red]error:[/red] {escape(msg)}", highlight=False)
            raise typer.Exit(2) from None


def fail(msg: str) -> None:
    """Print ``error: msg`` and exit with status 2."""
    console.print(f"[red]error:[/red] {escape(msg)}")
    raise typer.Exit(2)


def use_data(path: "Path | None", announce: bool = False) -> None:
    """Apply ``--data`` (when given) and, with ``announce``, print which data folder is used."""
    if path is not None:
        try:
            set_data_root(path)
        except FileNotFoundError as e:
            fail(str(e))
    if announce:
        console.print(describe_data_root())


def deprecated(old_value, old_spelling: str, new_spelling: str, new_value=None):
    """The value of an option given with an old spelling (with a deprecation warning on stderr),
    else ``new_value``. Old spellings keep working for one release (helioforge 0.2 drops them)."""
    if old_value is None:
        return new_value
    console.print(f"[yellow]deprecated:[/yellow] {old_spelling} is now {new_spelling}; the old spelling goes in helioforge 0.2")
    return old_value if new_value is None else new_value


def trainer_kw(accelerator: str, devices: str) -> dict:
    """Lightning ``accelerator``/``devices`` from the command-line strings."""
    return {"accelerator": accelerator, "devices": int(devices) if devices.isdigit() else devices}
