"""The app, the decorator every command goes through, and the options many
commands share (declared once here)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from phonemekit.console import console, setup_logging
from phonemekit.errors import PhonemekitError

app = typer.Typer(
    help="Recognise single speech sounds spoken by young children: prepare data, train, evaluate, export, classify live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help wraps option names whole at any width; rich's tables cut them at 80 columns.
    rich_markup_mode=None,
)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    setup_logging(verbose)


def command(*args, **kwargs):
    """Register a subcommand whose typed errors become one clear line."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except PhonemekitError as e:
                console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # a message is text, not markup
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/]")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(wrapper)

    return deco


# Options shared by several commands.
Device = Annotated[str, typer.Option(help="auto|cpu|cuda")]
Cache = Annotated[Path, typer.Option(help="Feature cache folder (or an fsspec URL).")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the results here as JSON.")]
Engine = Annotated[str, typer.Option(help="Where features are extracted: local | ray (needs phonemekit[ray]).")]
Address = Annotated[str | None, typer.Option(help="Ray cluster: auto, ray://host:10001; default: a local Ray runtime.")]
Workers = Annotated[int | None, typer.Option(min=1, help="Trainings side by side, in this many processes; default: 2 on 2+ cores.")]
TargetFar = Annotated[float, typer.Option(min=0.001, max=0.5, help="Verdict calibration: the false-accept rate per-sound thresholds aim at.")]
Trusted = Annotated[Path | None, typer.Option(help="Only load models whose sha256 is listed in this file.")]
