"""The ``fastrec`` command line."""
from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fastrec: compiled kernels for recommender systems.",
)


@app.callback()
def _group() -> None:
    """Keep subcommands (``fastrec info``) even while there is only one."""


@app.command()
def info() -> None:
    """Show the version, the available backends and the default thread count."""
    from ._config import show_config

    show_config()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
