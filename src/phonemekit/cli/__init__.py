"""The `phonemekit` console script: one entry point, one subcommand per step,
one module per group of commands. Commands parse options, call one library
function and print; the work lives in the library.

Every subcommand has `--help`. Errors from bad input, missing weights or bad
config print one line and exit non-zero.
"""

from phonemekit.cli import data, deploy, live, models, serving  # noqa: F401  (each registers its commands)
from phonemekit.cli.base import app


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
