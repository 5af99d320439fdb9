"""Class split for `eval continual`: step sizes, seeded determinism, --order files and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hellopack.continual import ContinualConfig, parse_labels
from hellopack.continual.run import class_steps
from hellopack.continual.split import read_order, seeded_order, split_steps
from hellopack.errors import HellopackError
from hellopack.train import TrainConfig

CLASSES = [{"index": i, "name": n, "source_id": f"n{i:08d}"} for i, n in
           enumerate(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])]


def test_step_sizes_differ_by_at_most_one_and_keep_the_order() -> None:
    order = list(range(10))
    assert split_steps(order, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [len(g) for g in split_steps(order, 3)] == [4, 3, 3]
    assert [len(g) for g in split_steps(list(range(100)), 10)] == [10] * 10
    assert split_steps([3, 1, 2], 1) == [[3, 1, 2]]


@pytest.mark.parametrize("steps", [0, 11])
def test_steps_outside_one_to_classes_are_refused(steps: int) -> None:
    with pytest.raises(HellopackError) as e:
        split_steps(list(range(10)), steps)
    assert str(e.value) == f"--steps {steps} must be between 1 and the archive's 10 classes"


def test_seeded_order_is_a_permutation_fixed_by_the_seed() -> None:
    a, b, c = seeded_order(100, 0), seeded_order(100, 0), seeded_order(100, 1)
    assert a == b and a != c
    assert sorted(a) == list(range(100)) and a != list(range(100))


def test_order_file_takes_indices_names_and_source_ids(tmp_path: Path) -> None:
    f = tmp_path / "order.txt"
    f.write_text("# cats first\ncat\n\n9\nn00000000\n  dog  \n1\n2\n4\n6\n7\n8\n")
    assert read_order(f, CLASSES) == [3, 9, 0, 5, 1, 2, 4, 6, 7, 8]
    cfg = ContinualConfig(train=TrainConfig(archive="x", arch="convnet"), steps=5, order=str(f))
    order, groups = class_steps(cfg, CLASSES)
    assert groups == [[3, 9], [0, 5], [1, 2], [4, 6], [7, 8]] and order == [c for g in groups for c in g]


def test_without_order_file_the_seed_decides(tmp_path: Path) -> None:
    cfg = ContinualConfig(train=TrainConfig(archive="x", arch="convnet", seed=3), steps=2)
    order, groups = class_steps(cfg, CLASSES)
    assert order == seeded_order(10, 3) and groups == [order[:5], order[5:]]


@pytest.mark.parametrize("text, message", [
    ("0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
     "line 11: '10' is not a class of the archive (use an index 0..9, a class name or a source id)"),
    ("0\n1\n2\nbird\n", "line 4: class 2 ('bird') is listed again (first on line 3); list every class exactly once"),
    ("0\n1\n2\n3\n4\n5\n6\n", ("lists 7 of the archive's 10 classes; missing 7 (horse), 8 (ship), 9 (truck); "
                               "list every class exactly once")),
    ("unicorn\n", "line 1: 'unicorn' is not a class of the archive"),
])
def test_bad_order_files_name_the_line_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "order.txt"
    f.write_text(text)
    with pytest.raises(HellopackError) as e:
        read_order(f, CLASSES)
    assert str(e.value).startswith(f"--order file '{f}' ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_order_file(tmp_path: Path) -> None:
    with pytest.raises(HellopackError, match="does not exist; pass a file listing one class per line"):
        read_order(tmp_path / "nope.txt", CLASSES)


def test_label_sources_are_parsed_and_checked() -> None:
    assert parse_labels("projector, hard") == ("projector", "hard")
    with pytest.raises(HellopackError, match="^--labels 'soft' is not one of projector, teacher, hard$"):
        parse_labels("projector,soft")
    with pytest.raises(HellopackError, match="^--labels lists 'hard' twice; name each label source once$"):
        parse_labels("hard,projector,hard")
    with pytest.raises(HellopackError, match="eval continual trains one seed per step"):
        ContinualConfig(train=TrainConfig(archive="x", arch="convnet", seeds=2)).validate()
    with pytest.raises(HellopackError, match="^--teacher is only used when --labels includes teacher$"):
        ContinualConfig(train=TrainConfig(archive="x", arch="convnet", teacher="resnet18:t.pt")).validate()
