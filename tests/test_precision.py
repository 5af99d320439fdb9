"""`hellopack --autocast auto|bf16|off` (HELLOPACK_AUTOCAST): where every command computes under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from hellopack import device as devices
from hellopack.errors import HellopackError
from hellopack.precision import AUTOCAST_ENV, autocast_mode
from hellopack_cli.app import app

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("value, mode", [(None, "auto"), ("", "auto"), ("auto", "auto"), (" BF16 ", "bf16"),
                                         ("off", "off")])
def test_the_mode_comes_from_the_environment(monkeypatch, value, mode) -> None:
    if value is None:
        monkeypatch.delenv(AUTOCAST_ENV, raising=False)
    else:
        monkeypatch.setenv(AUTOCAST_ENV, value)
    assert autocast_mode() == mode


@pytest.mark.parametrize("mode, cpu, cuda", [("auto", False, True), ("bf16", True, True), ("off", False, False)])
def test_which_devices_autocast(monkeypatch, mode, cpu, cuda) -> None:
    monkeypatch.setenv(AUTOCAST_ENV, mode)
    assert (devices.wants_bf16(CPU), devices.wants_bf16(CUDA)) == (cpu, cuda)
    assert devices.wants_bf16(CPU, force=not cpu) is (not cpu)  # an explicit choice still wins
    with devices.autocast(CPU):
        assert torch.is_autocast_enabled("cpu") is cpu


def test_a_bad_mode_is_refused_with_the_choices(monkeypatch) -> None:
    monkeypatch.setenv(AUTOCAST_ENV, "fp8")
    with pytest.raises(HellopackError) as e:
        devices.wants_bf16(CPU)
    assert str(e.value) == "--autocast (HELLOPACK_AUTOCAST) 'fp8' is not one of auto, bf16, off; pass one of them"


def test_the_root_option_sets_it_for_the_command_and_refuses_bad_values(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(AUTOCAST_ENV, "auto")  # restored (unset) after the test
    runner = CliRunner()
    bad = runner.invoke(app, ["--autocast", "fp8", "inspect", str(tmp_path / "a.hellopack")])
    assert bad.exit_code == 2
    assert "hellopack: error: --autocast (HELLOPACK_AUTOCAST) 'fp8' is not one of auto, bf16, off; pass one of them" \
        in bad.output
    assert autocast_mode() == "auto"  # a refused value is not written into the environment
    runner.invoke(app, ["--autocast", "bf16", "inspect", str(tmp_path / "a.hellopack")])
    assert autocast_mode() == "bf16"  # the command (and its child processes) see it in the environment
