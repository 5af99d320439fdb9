"""`hellopack pretrain-base` through Typer: files written, fingerprint printed, errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from hellopack.models.base import load_base
from hellopack_cli.pretrain_cmd import pretrain_base




app = typer.Typer()
app.command("pretrain-base")(pretrain_base)


@app.callback()
def _root() -> None:  # keeps `pretrain-base` a sub-command, as in the real app
    pass


ARGS = ["pretrain-base", "synthetic", "--config", "hellopack-tiny-vit", "--epochs", "1", "--max-images", "32",
        "--batch-size", "16", "--device", "cpu", "--quiet"]


def test_writes_the_base_and_its_fingerprint(tmp_path: Path) -> None:
    out = tmp_path / "base.safetensors"
    res = CliRunner().invoke(app, [*ARGS, "--out", str(out), "--probe", "40", "--probe-test", "20"])
    assert res.exit_code == 0, res.output
    fp = (tmp_path / "base.safetensors.sha256").read_text().strip()
    assert fp == load_base("hellopack-tiny-vit", weights=out).fingerprint
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"wrote {out} (") and "1 epoch of simclr-nt-xent on 32 images" in lines[0]
    assert lines[1] == f"fingerprint {fp} (also in {out}.sha256)"
    assert lines[2].startswith("linear probe top-1 ") and "(40 train / 20 test images)" in lines[2]
    assert lines[3] == f"use it with: hellopack build DATASET --base hellopack-tiny-vit --clip-weights {out} ..."

    again = CliRunner().invoke(app, [*ARGS, "--out", str(out)])
    assert again.exit_code == 2
    assert again.stderr.strip() == (f"hellopack: error: '{out}' already exists; pass --force to replace it "
                                    f"or choose another --out")


def test_json_output(tmp_path: Path) -> None:
    out = tmp_path / "b.safetensors"
    res = CliRunner().invoke(app, [*ARGS, "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["fingerprint"] == (tmp_path / "b.safetensors.sha256").read_text().strip()
    assert (data["config"], data["epochs"], data["images"], data["probe"]) == ("hellopack-tiny-vit", 1, 32, None)


def test_help_ends_with_an_example() -> None:
    doc = pretrain_base.__doc__.strip().splitlines()
    assert doc[-1].strip().startswith("Example: hellopack pretrain-base ")
