"""The `hellopack` command line (Typer). Installed as the import package `hellopack_cli`."""

from __future__ import annotations

import typer

import hellopack

from . import build_cmd, demo_cmd, inspect_cmd, later_cmd, teach_cmd, train_cmd

app = typer.Typer(
    name="hellopack",
    help=(
        "Compress an image-classification dataset into one small archive: distilled images plus "
        "low-rank matrices that regenerate soft labels on the fly (HeLlO)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hellopack {hellopack.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


# Order here is the order `hellopack --help` lists them.
app.command("build")(build_cmd.build)
app.command("inspect")(inspect_cmd.inspect)
app.command("train")(train_cmd.train)
app.command("teach")(teach_cmd.teach)
app.command("demo")(demo_cmd.demo)
later_cmd.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
