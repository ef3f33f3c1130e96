"""The layout docs/README.md describes, kept: no import cycles among the services' modules, and the engine's core
(execution/, workflows/, loop/) on its own domain types, with protos only at its edges (upstream/, the servicer,
app)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module and name `path` imports (`from a.b import c` gives a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {_module(path): path for path in SERVICES.rglob("*.py")}
    return {name: {other for other in _imports(path) if other in modules and other != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while (popped := stack.pop()) != module:
                component.append(popped)
            if component:
                found.append(sorted([module, *component]))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_module_of_the_services_imports_itself_back() -> None:
    graph = _graph()
    assert len(graph) > 100  # the walk found the code
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_engines_core_names_no_protos_and_its_rooms_import_only_downwards() -> None:
    engine = SERVICES / "engine"
    # A room may import from itself, the rooms after it here, the engine's own top-level domain modules and
    # services.common; never from a room before it.
    order = ["execution", "workflows", "loop", "upstream"]
    top_level = {_module(path) for path in engine.glob("*.py")} - {
        "services.engine", "services.engine.app", "services.engine.servicer", "services.engine.__main__"
    }
    for position, room in enumerate(order):
        allowed = {f"services.engine.{lower}" for lower in order[position:]}
        for path in (engine / room).glob("*.py"):
            for name in _imports(path):
                if room != "upstream" and name.startswith("agentplatform"):
                    raise AssertionError(f"{path.relative_to(ROOT)} imports {name}: protos belong in upstream/")
                if name.startswith("services.engine.") and not (
                    any(name.startswith(prefix) for prefix in allowed) or name.rsplit(".", 1)[0] in top_level
                    or name in top_level
                ):
                    raise AssertionError(f"{path.relative_to(ROOT)} imports {name}, outside the rooms below it")
    for module in top_level:
        path = ROOT / (module.replace(".", "/") + ".py")
        rooms = [name for name in _imports(path) if any(name.startswith(f"services.engine.{room}") for room in order)]
        assert rooms == [], f"{module} is imported by the rooms, so it may not import them: {rooms}"
