"""No unpickling anywhere (issue 6, item 4): a static, ast-based check of every .py file under
hellopack/ and cli/.

It fails, naming file:line, on any code path that can deserialise code:
- pickle.load / pickle.loads / pickle.Unpickler (also _pickle, cPickle, dill, cloudpickle,
  joblib.load, pandas.read_pickle, torch.package.PackageImporter), marshal.load / marshal.loads,
  any use of shelve, torch.jit.load (TorchScript is code);
- torch.load (or torch.serialization.load) unless the call passes weights_only=True as the literal
  keyword True (a variable or **kwargs cannot be checked, so they fail too);
- numpy.load with allow_pickle set to anything but the literal False (or **kwargs);
- yaml.load / yaml.load_all without Loader=yaml.SafeLoader (or CSafeLoader), and yaml.unsafe_load,
  full_load;
- the builtins eval( and exec(, and __import__ / importlib.import_module of those modules.
A forbidden function is flagged wherever it is referenced (passed as a callback, subclassed,
imported by name), not only where it is called. Attribute calls on our own objects, such as
`model.eval()`, are not the builtin and are not flagged.

Allowed, on purpose:
- torch.distributed's all_gather_object / broadcast_object_list (hellopack/dist.py) pickle
  internally, but only objects our own ranks produced in the same run, never input data.
- torchvision's CIFAR-10/100 reader unpickles the official batch files after checking their MD5
  against the published sums (hellopack/data/cifar.py documents it); that is third-party code,
  outside what this test scans.
- pickle.dumps, and names such as pickle.UnpicklingError (catching torch's refusal in
  hellopack/models/base.py).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("hellopack", "cli")

# Deserialise arbitrary objects, or run code, wherever they are reached.
FORBIDDEN = {
    **{f"{m}.{f}": "unpickles" for m in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
       for f in ("load", "loads", "Unpickler")},
    "joblib.load": "unpickles", "pandas.read_pickle": "unpickles", "torch.package.PackageImporter": "unpickles",
    "marshal.load": "unmarshals code objects", "marshal.loads": "unmarshals code objects",
    "torch.jit.load": "loads TorchScript code",
    "yaml.unsafe_load": "constructs arbitrary objects", "yaml.unsafe_load_all": "constructs arbitrary objects",
    "yaml.full_load": "constructs arbitrary objects", "yaml.full_load_all": "constructs arbitrary objects",
    "eval": "evaluates code", "exec": "executes code",
    "builtins.eval": "evaluates code", "builtins.exec": "executes code",
}
# Modules whose mere import means the code can unpickle (shelve is pickle on disk).
FORBIDDEN_MODULES = {"shelve": "shelve unpickles"}
DYNAMIC_IMPORT_TARGETS = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "builtins"}
# Safe only with the right arguments, checked at the call.
TORCH_LOAD = {"torch.load", "torch.serialization.load"}
NUMPY_LOAD = {"numpy.load"}
YAML_LOAD = {"yaml.load", "yaml.load_all"}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader"}
CONDITIONAL = TORCH_LOAD | NUMPY_LOAD | YAML_LOAD


@dataclass(frozen=True)
class Offence:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.aliases: dict[str, str] = {}
        self.offences: list[Offence] = []
        self.call_funcs: set[int] = set()

    def flag(self, node: ast.AST, what: str) -> None:
        self.offences.append(Offence(self.path, getattr(node, "lineno", 0), what))

    # ---- names -----------------------------------------------------------------------------

    def collect_aliases(self, tree: ast.AST) -> None:
        """Every import anywhere in the file (scopes ignored: conservative and simple)."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.aliases[top] = top
                    self.check_module(node, a.name)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                self.check_module(node, node.module)
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if a.name == "*":
                        if any(k.startswith(node.module + ".") for k in FORBIDDEN):
                            self.flag(node, f"from {node.module} import * (brings in {node.module}'s loaders)")
                        continue
                    self.aliases[a.asname or a.name] = full
            elif isinstance(node, ast.Call):
                self.call_funcs.add(id(node.func))

    def check_module(self, node: ast.AST, module: str) -> None:
        top = module.split(".")[0]
        if top in FORBIDDEN_MODULES:
            self.flag(node, f"imports {module}: {FORBIDDEN_MODULES[top]}")

    def qualname(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return node.id if node.id in ("eval", "exec", "getattr", "__import__") else None
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    # ---- visiting --------------------------------------------------------------------------

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in FORBIDDEN:
                    self.flag(node, f"imports {full}, which {FORBIDDEN[full]}")

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):  # a field or variable *named* eval is not the builtin
            self.reference(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.reference(node)
        self.generic_visit(node)

    def reference(self, node: ast.AST) -> None:
        q = self.qualname(node)
        if q is None:
            return
        if q in FORBIDDEN:
            self.flag(node, f"{q} {FORBIDDEN[q]}")
        elif q in CONDITIONAL and id(node) not in self.call_funcs:
            self.flag(node, f"{q} passed around instead of called with its safe arguments")

    def visit_Call(self, node: ast.Call) -> None:
        q = self.qualname(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        splat = any(k.arg is None for k in node.keywords)
        if q in TORCH_LOAD:
            v = kw.get("weights_only")
            if not (isinstance(v, ast.Constant) and v.value is True) or splat:
                self.flag(node, f"{q} without weights_only=True (unpickles arbitrary objects)")
        elif q in NUMPY_LOAD:
            v = kw.get("allow_pickle")
            if splat or (v is not None and not (isinstance(v, ast.Constant) and v.value is False)):
                self.flag(node, f"{q} with allow_pickle not literally False")
        elif q in YAML_LOAD:
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if loader is None or self.qualname(loader) not in SAFE_YAML_LOADERS:
                self.flag(node, f"{q} without Loader=yaml.SafeLoader")
        elif q in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            base, attr = self.qualname(node.args[0]), node.args[1]
            if base and isinstance(attr, ast.Constant) and f"{base}.{attr.value}" in set(FORBIDDEN) | CONDITIONAL:
                self.flag(node, f"getattr reaches {base}.{attr.value}")
        elif q in ("__import__", "importlib.import_module"):
            target = node.args[0] if node.args else None
            if not isinstance(target, ast.Constant) or str(target.value).split(".")[0] in DYNAMIC_IMPORT_TARGETS:
                self.flag(node, "dynamic import of a module that can unpickle or run code")
        self.generic_visit(node)


def check_source(source: str, path: str = "<snippet>") -> list[Offence]:
    """Offences in one file's source, in line order."""
    tree = ast.parse(source, filename=path)
    c = _Checker(path)
    c.collect_aliases(tree)
    c.visit(tree)
    return sorted(set(c.offences), key=lambda o: (o.line, o.what))


def scanned_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_package_and_cli_never_unpickle() -> None:
    files = scanned_files()
    assert len(files) > 30 and REPO / "hellopack" / "archive" / "reader.py" in files
    offences = [o for p in files for o in check_source(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not offences, "code paths that can unpickle or run code:\n" + "\n".join(map(str, offences))


def test_negative_control_flags_torch_load_and_pickle_loads() -> None:
    src = "import pickle\nimport torch\n\ndef f(p, b):\n    x = torch.load(p)\n    return pickle.loads(b)\n"
    assert [str(o) for o in check_source(src, "bad.py")] == [
        "bad.py:5: torch.load without weights_only=True (unpickles arbitrary objects)",
        "bad.py:6: pickle.loads unpickles",
    ]


@pytest.mark.parametrize("src, what", [
    ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only=True"),
    ("import torch\ntorch.load(p, weights_only=flag)", "torch.load without weights_only=True"),
    ("import torch\ntorch.load(p, weights_only=True, **kw)", "torch.load without weights_only=True"),
    ("from torch import load as tl\ntl(p)", "torch.load without weights_only=True"),
    ("import torch.serialization as ts\nts.load(p)", "torch.serialization.load without weights_only=True"),
    ("import torch\nf = torch.load", "torch.load passed around"),
    ("import torch\ntorch.jit.load(p)", "torch.jit.load loads TorchScript code"),
    ("import pickle as pk\npk.load(f)", "pickle.load unpickles"),
    ("from pickle import Unpickler\nclass U(Unpickler): pass", "imports pickle.Unpickler"),
    ("import pickle\nclass U(pickle.Unpickler): pass", "pickle.Unpickler unpickles"),
    ("import marshal\nmarshal.loads(b)", "marshal.loads unmarshals code objects"),
    ("import shelve\nshelve.open(p)", "imports shelve"),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", "numpy.load with allow_pickle not literally False"),
    ("import yaml\nyaml.load(s)", "yaml.load without Loader=yaml.SafeLoader"),
    ("import yaml\nyaml.load(s, Loader=yaml.Loader)", "yaml.load without Loader=yaml.SafeLoader"),
    ("import yaml\nyaml.full_load(s)", "yaml.full_load constructs arbitrary objects"),
    ("x = eval(s)", "eval evaluates code"),
    ("exec(code)", "exec executes code"),
    ("import builtins\nbuiltins.eval(s)", "builtins.eval evaluates code"),
    ("import pickle\ngetattr(pickle, 'loads')(b)", "getattr reaches pickle.loads"),
    ("__import__('pickle')", "dynamic import"),
    ("import importlib\nimportlib.import_module(name)", "dynamic import"),
])
def test_each_rule_flags(src: str, what: str) -> None:
    offences = check_source(src)
    assert offences and all(o.line >= 1 for o in offences)
    assert any(what in o.what for o in offences), offences


def test_safe_forms_pass() -> None:
    src = """
import pickle
import numpy as np
import torch
import torch.distributed as tdist
import yaml

def f(path, model, box, out, obj):
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    arr = np.load(path, mmap_mode="r")
    arr2 = np.load(path, allow_pickle=False)
    cfg = yaml.load(path.read_text(), Loader=yaml.SafeLoader)
    cfg2 = yaml.safe_load(path.read_text())
    model.eval()
    eval: int = 0  # a dataclass field named eval (hellopack/distill/splits.py)
    tdist.all_gather_object(out, obj)
    tdist.broadcast_object_list(box, src=0)
    blob = pickle.dumps(obj)
    try:
        pass
    except pickle.UnpicklingError:
        pass
"""
    assert check_source(src) == []
