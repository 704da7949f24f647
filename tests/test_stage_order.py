"""The package's stages import only downwards (data -> layers -> models -> inference -> training
-> the entry points) and no module imports itself back through others: every `import` of
src/landmarks, function-level ones included, read with ast."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "landmarks"

# Rank of each stage; a module may import modules of its own rank or lower. Rank 0 is what every
# stage shares: settings, errors, files, the console and the scoring (no Keras, no TensorFlow).
SHARED = ("config", "errors", "io_utils", "console", "backend", "metrics", "submission")
STAGES = {
    **dict.fromkeys(SHARED + ("evaluation", "plots"), 0),
    "data": 1,
    "layers": 2,
    "models": 3,
    "inference": 4,
    "training": 5,
    "kaggle": 6,
    "demo_flow": 6,
    "cli": 7,
    "__main__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def stage(module: str) -> int | None:
    """The rank of a module's stage (None for the package's own __init__)."""
    parts = module.split(".")
    return STAGES[parts[1]] if len(parts) > 1 else None


def imports(module: str, path: Path) -> set[str]:
    """The landmarks modules `module` imports anywhere in its file (`from pkg import mod` counts
    as an import of pkg.mod when that is a module)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name.split(".")[0] == "landmarks" and name != module}


GRAPH = {module: imports(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_stage():
    assert [m for m in MODULES if m != "landmarks" and m.split(".")[1] not in STAGES] == []


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({stage(module)}) imports {target} ({stage(target)})"
        for module, targets in graph.items()
        for target in targets
        if stage(module) is not None and stage(target) is not None
        if stage(target) > stage(module)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the list of modules along it (depth-first search)."""
    found, done = [], set()

    def visit(module, trail):
        if module in trail:
            cycle = trail[trail.index(module) :]
            start = cycle.index(min(cycle))
            cycle = cycle[start:] + cycle[:start]
            if cycle not in found:
                found.append(cycle)
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


def test_no_stage_imports_a_later_one():
    assert upward_imports(GRAPH) == []


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_checks_find_what_they_look_for():
    graph = {
        "landmarks.inference.sources": {"landmarks.training.plan"},
        "landmarks.training.plan": {"landmarks.data.tables"},
        "landmarks.kaggle.client": {"landmarks.kaggle.wheels"},
        "landmarks.kaggle.wheels": {"landmarks.kaggle.client"},
    }
    assert upward_imports(graph) == [
        "landmarks.inference.sources (4) imports landmarks.training.plan (5)"
    ]
    assert cycles(graph) == [["landmarks.kaggle.client", "landmarks.kaggle.wheels"]]
    assert "landmarks.data.record_count" in GRAPH["landmarks.inference.sources"]
    assert imports("landmarks.data", PACKAGE / "data" / "__init__.py") == set()
