"""docs/use-in-your-loop.md: the timm and Lightning snippets run as written on a tiny archive (each skips,
saying why, when its package is missing)."""

from __future__ import annotations

import io
import re
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from test_api import python_blocks
from test_train_kit import demo_archive  # noqa: F401  (session fixture)

DOC = Path(__file__).resolve().parents[1] / "docs" / "use-in-your-loop.md"


def run_snippet(heading: str, archive: Path) -> tuple[dict, str]:
    (code,) = python_blocks(DOC, heading)
    ns: dict = {"ARCHIVE": str(archive), "__name__": "use_in_your_loop"}
    out = io.StringIO()
    with redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on worker counts and loggers
        exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102
    return ns, out.getvalue()


def test_timm_snippet(demo_archive: Path) -> None:  # noqa: F811
    pytest.importorskip("timm", reason="timm is not installed (pip install timm)")
    ns, printed = run_snippet("## timm", demo_archive)
    assert re.search(r"^timm resnet18: 4 epochs, last loss \d+\.\d{3}$", printed, flags=re.M), printed
    assert ns["loss"].isfinite()


def test_lightning_snippet(demo_archive: Path) -> None:  # noqa: F811
    pytest.importorskip("lightning", reason="Lightning is not installed (pip install lightning); "
                                            "it is not a hellopack dependency")
    ns, printed = run_snippet("## Lightning", demo_archive)
    m = re.search(r"^lightning: 4 epochs, val top-1 (\d\.\d{3})$", printed, flags=re.M)
    assert m, printed
    assert 0.0 <= float(m.group(1)) <= 1.0
    assert ns["trainer"].global_step == 4 * 5  # 40 images, batch 8, 4 epochs
