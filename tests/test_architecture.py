"""The shape of the house, checked from the modules' ASTs: one-way imports, small modules, one public surface."""
import ast
from pathlib import Path

import pytest

import ganlab

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "ganlab"
# Only these ask the plugin registry; everything below them is handed what it needs.
# (ganlab.testing builds a RunContext the way the report does, for plugin authors' tests.)
TOP_MODULES = {"ganlab.api", "ganlab.plugin.registry", "ganlab.testing"}
TOP_PACKAGES = ("ganlab.cli", "ganlab.report")
MAX_LINES = 400
# The layers, top first (docs/architecture.md): a module imports its own layer package or a lower layer, never a
# higher one or a different package of its own layer. `ganlab` itself (the public names) is not a layer.
LAYERS = (("ganlab.__main__",), ("ganlab.cli",), ("ganlab.report",), ("ganlab.api", "ganlab.testing"),
          ("ganlab.plugin", "ganlab.measure"), ("ganlab.model",), ("ganlab.data",), ("ganlab.store",),
          ("ganlab.defaults",), ("ganlab.errors",))


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in the file (function-level too), except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skip = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If) and "TYPE_CHECKING" in
            ast.unparse(branch.test) for statement in branch.body for node in ast.walk(statement)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _core_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m not in (name, "ganlab")}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_core():
    graph = _core_graph()
    assert "ganlab.data.datasets" in graph["ganlab.model.training"]  # the graph is real
    assert _cycles(graph) == []


def _layer(module: str) -> tuple[int, str]:
    """(depth from the top, layer package) of a core module."""
    for depth, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return depth, package
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS and docs/architecture.md")


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} imports {other}" for name, imported in graph.items() if name != "ganlab"
                  for other in imported if _layer(name) != _layer(other) and _layer(name)[0] >= _layer(other)[0])


def test_imports_run_down_the_layers():
    assert _upward({"ganlab.model.training": {"ganlab.report.run", "ganlab.data.datasets", "ganlab.model.devices"},
                    "ganlab.measure.rows": {"ganlab.plugin.options"}, "ganlab.plugin.options": {"ganlab.errors"}}
                   ) == ["ganlab.measure.rows imports ganlab.plugin.options",
                         "ganlab.model.training imports ganlab.report.run"]
    assert _upward(_core_graph()) == []


def test_only_top_modules_ask_the_registry():
    graph = _core_graph()
    users = {name for name, imported in graph.items() if "ganlab.plugin.registry" in imported
             and not name.startswith(TOP_PACKAGES)}
    assert users <= TOP_MODULES, users - TOP_MODULES
    assert "ganlab.api" in users


def test_report_does_not_pull_in_training():
    graph = _core_graph()
    report = set().union(*(imported for name, imported in graph.items() if name.startswith("ganlab.report")))
    assert "ganlab.model.training" not in report and "ganlab.model.devices" in report


def test_no_module_over_the_size_limit():
    for path in list(CORE.rglob("*.py")) + list((REPO / "plugins").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines"


def test_plugins_import_only_the_public_surface():
    plugin_files = list((REPO / "plugins").rglob("*.py")) + list((REPO / "tests" / "example_plugin").rglob("*.py"))
    assert len(plugin_files) > 10
    for path in plugin_files:
        private = sorted(m for m in _imports(path) if m.startswith("ganlab.") and m.removeprefix("ganlab.")
                         not in ganlab.__all__)
        assert not private, f"{path.relative_to(REPO)} imports {private}; use names of `ganlab` itself"


def test_the_core_never_imports_plugins():
    for path in CORE.rglob("*.py"):
        assert not any(m.startswith("ganlab_plugins") for m in _imports(path)), path


def test_every_public_name_resolves():
    for name in ganlab.__all__:
        assert getattr(ganlab, name) is not None, name


@pytest.mark.parametrize("page", ["plugins.md", "reference.md"])
def test_docs_name_every_hook_and_public_name(page):
    from ganlab.plugin import hookspecs

    docs = (REPO / "docs" / page).read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("ganlab_")]
    assert len(hooks) >= 8
    for name in hooks + list(ganlab.__all__):
        assert f"`{name}" in docs or f", `{name}" in docs or f" {name}(" in docs, (page, name)
    if page == "reference.md":  # each hook has its own section with an example
        for hook in hooks:
            section = docs.split(f"### `{hook}(", 1)[1].split("\n### ", 1)[0]
            assert "```python" in section and "@ganlab.hookimpl" in section, hook
