"""The code's layout: no import cycle among the modules of orchestration/, resources/ or ops/,
counting imports inside functions too (they hide a cycle, they do not remove it)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The known modules `name` imports anywhere in its file (`from a import b` counts a.b if it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    out = set()
    for target in found:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["orchestration", "resources", "ops"])
def test_no_import_cycle(package):
    known = modules(package)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    found = cycles(graph)
    assert found == [], f"import cycles in {package}/: {found}"


@pytest.mark.parametrize("package, never", [("ops", ("dagster", "resources", "orchestration")),
                                             ("resources", ("orchestration",))])
def test_dependencies_point_one_way(package, never):
    """orchestration/ -> resources/ -> ops/: ops/ is plain computation (no Dagster, nothing above
    it) and resources/ never reaches into the wiring, counting imports inside functions."""
    upward = []
    for name, path in modules(package).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                       else [])
            upward += [f"{name} imports {t}" for t in targets if t.split(".")[0] in never]
    assert upward == []



def test_the_services_use_no_dagster_api():
    """orchestration/services/ holds what the loop offers beside its assets (specs, NATS requests,
    model events, retention, restore): they take the store and storage as arguments and import no
    Dagster themselves at module level, so that Dagster's objects live in assets, checks, sensors,
    jobs and definitions."""
    names = sorted(n for n in modules("orchestration") if n.startswith("orchestration.services."))
    assert len(names) >= 6, names
    for name in names:
        tree = ast.parse(modules("orchestration")[name].read_text(encoding="utf-8"))
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        imported = {a.name for n in top if isinstance(n, ast.Import) for a in n.names} | \
                   {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in imported if m.split(".")[0] == "dagster"}, (name, imported)
