"""The package's import structure: the layers written in the README hold, and no cycle exists.

Every ``import`` counts, including those under ``TYPE_CHECKING`` and inside functions: a
type-only import upward still ties a lower part to a higher one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agent"
LAYER_LINE = re.compile(r"^(\d+)\.\s+[\w-]+\s+(agent[\w., ]*)$")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in AGENT.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every agent module ``path`` imports; ``from pkg import sub`` counts as ``pkg.sub``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "agent")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "agent":
                continue
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            yield from subs or [node.module]


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: set(imports_of(path, modules)) - {name} for name, path in modules.items()}


def readme_layers() -> list[list[str]]:
    """The numbered list in the README's Layout section: one layer per line, lowest first."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    layers = []
    for line in section.splitlines():
        m = LAYER_LINE.match(line.strip())
        if m:
            assert int(m[1]) == len(layers) + 1, f"README layers out of order at {line!r}"
            layers.append([name.strip() for name in m[2].split(",")])
    return layers


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The layer of the longest listed name that is ``module`` or a package holding it (``agent``
    itself stands for its ``__init__`` only, so a new module must be placed on purpose)."""
    best: tuple[int, int] | None = None
    for i, names in enumerate(layers):
        for name in names:
            covers = module == name or (name != "agent" and module.startswith(name + "."))
            if covers and (best is None or len(name) > best[1]):
                best = (i, len(name))
    return None if best is None else best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_readme_lists_every_module_in_exactly_one_layer() -> None:
    layers = readme_layers()
    assert len(layers) >= 10
    listed = [name for names in layers for name in names]
    assert len(listed) == len(set(listed)), "a name is listed twice"
    unplaced = sorted(m for m in all_modules() if layer_of(m, layers) is None)
    assert unplaced == [], f"add these to the README's layer list: {unplaced}"


def test_no_module_imports_from_a_higher_layer() -> None:
    layers = readme_layers()
    upward = []
    for module, targets in sorted(import_graph().items()):
        mine = layer_of(module, layers)
        assert mine is not None
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine + 1}) imports {target} (layer {theirs + 1})")
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_imports_a_private_name_of_another_package() -> None:
    """``from agent.x.y import _name`` is allowed only inside the package ``agent.x``."""
    found = []
    for module, path in sorted(all_modules().items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agent")):
                continue
            home = node.module.split(".")[:2]
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.endswith("__")
                if private and module.split(".")[:2] != home:
                    found.append(f"{module} imports {node.module}.{alias.name}")
    assert found == []


# --- the checks themselves catch what they are for ------------------------------------------------


def test_the_cycle_finder_reports_a_type_only_pair_and_a_longer_loop() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b"], ["c", "d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_under_type_checking_and_in_functions_are_counted(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from agent.config import AgentConfig\n"
        "def f():\n    from agent.commands import bench_clip\n    import agent.service\n"
    )
    modules = all_modules()
    assert set(imports_of(source, modules)) == {"agent.config", "agent.commands.bench_clip", "agent.service"}


def test_a_package_name_covers_its_modules_and_the_longest_name_wins() -> None:
    layers = [["agent"], ["agent.vision"], ["agent.cli"]]
    assert layer_of("agent.vision.stage", layers) == 1
    assert layer_of("agent", layers) == 0
    assert layer_of("agent.errors", layers) is None
    assert layer_of("agent.cli", layers) == 2


PRIVATE_REACH_ALLOWED = {
    ("agent/analytics/alerts.py", "previous._state"): "AlertEngine.take_over reads its own class",
    ("agent/audit/log.py", "log._lock"): "AuditLog.open sets up the instance it builds",
    ("agent/audit/log.py", "log._recover"): "AuditLog.open sets up the instance it builds",
    ("agent/audit/log.py", "log._append"): "AuditLog.open sets up the instance it builds",
    ("agent/audit/log.py", "log._deliver"): "AuditLog.open sets up the instance it builds",
    ("agent/privacy/coredump.py", "ctypes._FuncPointer"): "typeshed's name for a C function type",
    ("agent/privacy/privacy_mode.py", "signal._HANDLER"): "typeshed's name for a signal handler",
    ("agent/mqtt_client.py", "super()._create_socket"): "PahoClient's documented, tested hook",
}


def test_no_code_reaches_into_another_objects_private_attributes() -> None:
    """``thing._name`` only on ``self``/``cls``, or in the few places listed with their reason."""
    found = set()
    for path in sorted(AGENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")):
                continue
            on_self = isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}
            if node.attr.endswith("__") or on_self:
                continue
            found.add((str(path.relative_to(ROOT)), ast.unparse(node)))
    assert sorted(found - set(PRIVATE_REACH_ALLOWED)) == []
