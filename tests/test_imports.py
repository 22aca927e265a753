"""The package's shape: imports between fffvdi modules form no cycle and sit at the top of their module, and a
function imports a third-party package only when it is optional or heavy (listed below, with the reason)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fffvdi"
MAX_LINES = 300

# Third-party packages a function may import; everything else is imported at the top of its module.
LAZY = {
    "peft": "optional: only LoRA training and merging need it (lora.enabled)",
    "bitsandbytes": "optional: only optim.name=adamw8bit needs it (CUDA only)",
    "lpips": "optional: the LPIPS column of the evaluation",
    "psutil": "optional: benchmark memory readings on machines that have it",
    "gradio": "the web app alone (scripts/app.py)",
    "diffusers": "heavy (seconds to import): imported where a model is built, so config and input checks answer first",
    "transformers": "heavy, like diffusers; also SAM 2's video classes for --tracker sam2",
}


def module_name(path: Path) -> str:
    """'fffvdi.inpaint.pipeline' for fffvdi/inpaint/pipeline.py, 'fffvdi.io' for fffvdi/io/__init__.py."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[list[str], bool, int]]:
    """Every import statement of a file: (absolute module names it loads, inside a function?, line)."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.append(([a.name for a in child.names], in_function, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against the importing module's package
                    package = module_name(path).split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
                found.append((names, in_function, child.lineno))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def internal(name: str) -> str | None:
    """The fffvdi module an imported name loads (None for third-party)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the fffvdi modules importing it executes, parent packages' __init__ included (importing
    fffvdi.io.masks from outside fffvdi.io runs fffvdi/io/__init__.py first)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for names, _, _ in imports(path):
            for target in filter(None, map(internal, names)):
                graph[mod].add(target)
                parent = target.rpartition(".")[0]
                while parent not in ("", "fffvdi") and not (mod + ".").startswith(parent + "."):
                    graph[mod].add(parent)
                    parent = parent.rpartition(".")[0]
    for mod in graph:
        graph[mod].discard(mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_no_import_cycle_between_fffvdi_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_functions_import_no_fffvdi_module_and_only_optional_or_heavy_packages():
    problems = []
    for mod, path in MODULES.items():
        for names, in_function, line in imports(path):
            if not in_function:
                continue
            for name in names:
                if internal(name) is not None:
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} inside a function")
                elif name.split(".")[0] not in LAZY:
                    problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} inside a function "
                                    "(not an optional or heavy package: import it at the top)")
    assert problems == []


def test_no_module_is_longer_than_300_lines():
    lines = {mod: len(path.read_text(encoding="utf-8").splitlines()) for mod, path in MODULES.items()}
    assert {mod: n for mod, n in lines.items() if n > MAX_LINES} == {}


# The layers of README's "Layout": a module may import from its own subpackage and from lower layers only.
LAYERS = (
    {"errors", "files"},
    {"config", "shards", "diffusion", "io", "flow"},
    {"models", "propagate", "data", "metrics"},
    {"inpaint", "tracking"},
    {"train", "evaluation"},
    {"bench", "app"},
)


def layer_of(module: str) -> int:
    """Layer of 'fffvdi.inpaint.pipeline' (its subpackage, or the top-level module's own name)."""
    part = module.split(".")[1] if "." in module else "__init__"
    return next((i for i, names in enumerate(LAYERS) if part in names), len(LAYERS))


def test_imports_go_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if a.split(".")[:2] != b.split(".")[:2] and layer_of(b) >= layer_of(a))
    assert upward == []
    assert {layer_of(m) for m in MODULES if m != "fffvdi"} == set(range(len(LAYERS)))  # every module has a layer


def test_the_top_level_holds_only_the_shared_foundations():
    """Everything else lives in the subpackage of its job."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top == ["config", "errors", "files", "shards"]
