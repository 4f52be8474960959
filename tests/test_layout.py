"""The package layout is the architecture: imports point down the stack of docs/architecture.md, no
module imports itself back through others, modules stay small, public functions say what they do.

Run alone as a script (`python tests/test_layout.py`) it prints every violation.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "videoseq"
MAX_LINES = 400

# The stack, bottom first (docs/architecture.md, "Layers"). A module may import from its own layer and
# from the layers below it, never from a layer above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("videoseq", "videoseq.errors", "videoseq.registry", "videoseq.config", "videoseq.runtime")),
    ("io", ("videoseq.io",)),
    ("models", ("videoseq.models",)),
    ("data", ("videoseq.data",)),
    ("learn", ("videoseq.learn",)),
    ("infer", ("videoseq.infer",)),
    ("synthetic", ("videoseq.synthetic",)),
    ("interface", ("videoseq.commands", "videoseq.cli", "videoseq.__main__", "videoseq.api")),
]


def module_name(path: Path) -> str:
    """`videoseq/io/video.py` -> `videoseq.io.video`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific prefix that names `module`."""
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best < 0:
        raise AssertionError(f"{module}: in no layer of tests/test_layout.py; add it to LAYERS")
    return best


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The videoseq modules `path` imports anywhere in its body (function-level imports included)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:       # `videoseq.io.video.read_frames` -> the module
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every videoseq module -> the videoseq modules it imports."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports_of(p, set(files)) for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a closed path), or None. Package `__init__` edges to their parents are
    ignored: importing `videoseq.io.video` runs `videoseq/__init__.py` first by definition."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not state.get(v):
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            found = visit(m)
            if found:
                return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import from a lower layer to a higher one."""
    out = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            if layer_of(b) > layer_of(a):
                out.append(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})")
    return out


def long_modules() -> list[str]:
    """Modules of videoseq/ and flows/ over MAX_LINES lines."""
    files = list(PACKAGE.rglob("*.py")) + list((ROOT / "flows").rglob("*.py"))
    return [f"{p.relative_to(ROOT)}: {n} lines" for p in sorted(files)
            if (n := len(p.read_text().splitlines())) > MAX_LINES]


def undocumented() -> list[str]:
    """Public functions, classes and methods of videoseq/ and flows/ without a docstring.

    Public: a name without a leading underscore, at module level or in a public class. Methods that
    implement a protocol (dunders) and `forward` of an nn.Module whose class says what it computes
    are exempt; so are nested functions (closures are private by construction).
    """
    missing = []
    files = list(PACKAGE.rglob("*.py")) + list((ROOT / "flows").rglob("*.py"))
    for p in sorted(files):
        tree = ast.parse(p.read_text())
        for node in tree.body:
            missing += _missing_in(p, node, owner=None)
    return missing


def _missing_in(path: Path, node: ast.AST, *, owner: ast.ClassDef | None) -> list[str]:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    if node.name.startswith("_"):
        return []
    out = []
    exempt = owner is not None and ast.get_docstring(owner) and node.name in {"forward", "extra_repr"}
    if ast.get_docstring(node) is None and not exempt and not _is_property_like(node):
        where = f"{owner.name}.{node.name}" if owner else node.name
        out.append(f"{path.relative_to(ROOT)}:{node.lineno} {where}")
    if isinstance(node, ast.ClassDef):
        for child in node.body:
            out += _missing_in(path, child, owner=node)
    return out


def _is_property_like(node: ast.AST) -> bool:
    """A one-line property or a NamedTuple/dataclass field accessor says what it is by its name."""
    if not isinstance(node, ast.FunctionDef):
        return False
    decorated = any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)
    return decorated and len(node.body) == 1


def prefect_imports() -> list[str]:
    """Modules of the library that import prefect (only flows/ may)."""
    out = []
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "prefect" or n.startswith("prefect") for n in names):
                out.append(str(p.relative_to(ROOT)))
    return out


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_imports_point_down_the_stack() -> None:
    assert upward_imports(import_graph()) == []


def test_every_module_is_in_a_layer_and_a_subpackage_or_the_core() -> None:
    for m in import_graph():
        layer_of(m)
    top = {p.name for p in PACKAGE.glob("*.py")}
    core = {"__init__.py", "__main__.py", "api.py", "cli.py", "config.py", "errors.py", "registry.py",
            "runtime.py"}
    assert top <= core, f"modules outside a stage subpackage: {sorted(top - core)}"


def test_modules_are_small() -> None:
    assert long_modules() == []


def test_public_functions_have_docstrings() -> None:
    assert undocumented() == []


def test_library_never_imports_prefect() -> None:
    assert prefect_imports() == []


def test_the_checker_sees_a_planted_cycle_and_an_upward_import() -> None:
    graph = {"videoseq.io.video": {"videoseq.learn.train"}, "videoseq.learn.train": {"videoseq.io.video"}}
    assert find_cycle(graph) == ["videoseq.io.video", "videoseq.learn.train", "videoseq.io.video"]
    assert upward_imports(graph) == ["videoseq.io.video (io) imports videoseq.learn.train (learn)"]


if __name__ == "__main__":
    graph = import_graph()
    problems = ([" -> ".join(c) for c in [find_cycle(graph)] if c] + upward_imports(graph) + long_modules()
                + undocumented() + prefect_imports())
    print("\n".join(problems) or "layout: ok")
    sys.exit(1 if problems else 0)
