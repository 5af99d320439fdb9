"""Commands that are planned but not built yet: they say so and exit 2 (no stubs pretending to work)."""

from __future__ import annotations

import typer

from .errors import fail


def register(app: typer.Typer) -> None:
    eval_app = typer.Typer(help="Evaluate an archive beyond plain training (continual learning).", no_args_is_help=True)

    @eval_app.command("continual", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def continual() -> None:
        """Class-incremental (GDumb) evaluation of an archive: not built yet.

        Example: hellopack eval continual in100-ipc10.hellopack --steps 5 --arch resnet18 --val /data/in100/val
        """
        raise fail("'hellopack eval continual' is not built yet in this version (planned); see the README roadmap")

    app.add_typer(eval_app, name="eval")
