"""The house rules on imports, checked on the package's source (imports inside functions included):
imports run one way (down the layers below), there is no cycle, and importing the package or starting the
CLI loads none of the heavy libraries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

PKG = Path(__file__).resolve().parents[2] / "mvit2deploy"

# Lower layers never import higher ones. Modules of one layer may import each other (without a cycle).
LAYERS = [
    {"errors", "spec", "fs", "paths", "console", "data", "cpu", "jsonsafe"},
    {"artifact", "artifact_check", "images"},
    {"models"},
    {"hub"},
    {"tasks"},
    {"runtime"},
    {"export"},
    {"predict", "bench", "val"},
    {"analysis"},
    {"cli"},
]
HEAVY = ("torch", "onnx", "onnxruntime", "onnxsim", "coremltools", "openvino", "nncf", "matplotlib")


def module_name(path: Path, root: Path = PKG) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PKG) -> Set[str]:
    """Every mvit2deploy module `path` imports, anywhere in the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mvit2deploy")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mvit2deploy":
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub, root) else target)
    found.discard(name)
    return found


def _exists(module: str, root: Path = PKG) -> bool:
    rel = Path(*module.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def graph() -> Dict[str, Set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/unit/test_imports.py (add it)")


def test_imports_run_down_the_layers():
    bad = sorted(f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
                 for a, targets in graph().items() if a != "mvit2deploy" for b in targets
                 if b != "mvit2deploy" and layer(b) > layer(a))
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    state: Dict[str, int] = {}
    stack = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt in g and not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if not state.get(node):
            visit(node)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """A cycle hidden in a function body still counts."""
    root = tmp_path / "mvit2deploy"
    (root / "export").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "spec.py").write_text("")
    (root / "export" / "__init__.py").write_text("")
    src = root / "export" / "x.py"
    src.write_text("def f():\n    from ..cli import app\n    from .. import spec\n    import numpy\n")
    assert imports_of(src, root) == {"mvit2deploy.cli", "mvit2deploy.spec"}


def _loaded_after(code: str) -> Set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    return {m for m in out if m.split(".")[0] in HEAVY}


def test_import_package_loads_no_heavy_library():
    assert _loaded_after("import mvit2deploy, mvit2deploy.paths, mvit2deploy.spec") == set()


def test_cli_help_and_weights_list_load_no_heavy_library():
    code = ("import sys\nfrom mvit2deploy.cli import app\nfrom typer.testing import CliRunner\n"
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(app, ['weights', 'list']); assert r.exit_code == 0, r.output\n")
    assert _loaded_after(code) == set()
