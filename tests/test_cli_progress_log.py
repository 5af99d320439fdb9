"""With stderr redirected to a file, a build logs timestamped progress as it runs, not at exit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from helpers_build import CHILD_ENV, build_argv, tiny_teacher, write_build_toml


def test_a_redirected_build_writes_its_progress_while_it_runs(tmp_path: Path) -> None:
    teacher = tiny_teacher(tmp_path / "t.safetensors")
    config = write_build_toml(tmp_path / "build.toml", eval_batch_size=32)
    argv = build_argv(tmp_path / "out.hellopack", teacher=teacher, config=config, quiet=False, fit_epochs=40)
    log = tmp_path / "build.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "hellopack_cli", *argv], stdout=subprocess.DEVNULL,
                                stderr=err, env=CHILD_ENV, cwd=tmp_path)
        seen_while_running = False
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if "fit projector: started" in log.read_text():
                seen_while_running = proc.poll() is None
                break
            time.sleep(0.05)
        assert proc.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    assert seen_while_running, text  # the line was in the file before the build ended
    lines = text.splitlines()
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", ln) for ln in lines), lines  # no bars, no escape codes
    assert any(ln.endswith("data: synthetic shapes: 4 classes, 48 train images of 32 px, seed 0; 48 training "
                           "images, held-out: 16 test images") or "data: " in ln for ln in lines)
    assert any(re.search(r"fit projector: done, \d+ step in [\d.]+ s", ln) for ln in lines), lines
    assert "\x1b[" not in text
