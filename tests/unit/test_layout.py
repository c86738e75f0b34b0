"""The shape of the source tree a newcomer relies on: packages depend one way, files stay
small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
ROOT = SERVICES / "tessera"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every hand-written module of the tessera package (the generated v1/ left out)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        if "v1" in path.relative_to(ROOT).parts:
            continue
        name = ".".join(path.relative_to(SERVICES).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The tessera modules ``path`` imports (at module level, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tessera"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tessera"))
    return found


def test_no_import_cycles():
    mods = modules()
    graph = {m: imports(p, top_level_only=True) & set(mods) - {m} for m, p in mods.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_model_packages_do_not_reach_into_each_other():
    """lm and decoder train and sample on their own; gateway and jobs meet only in routes."""
    rules = {
        "tessera.lm": ("tessera.prior", "tessera.decoder", "tessera.clip"),
        "tessera.decoder": ("tessera.prior", "tessera.lm"),
        "tessera.jobs": ("tessera.gateway",),
        "tessera.routes": ("tessera.gateway", "tessera.jobs"),
        "tessera.common": ("tessera.gateway", "tessera.jobs", "tessera.routes"),
    }
    for module, path in modules().items():
        for package, forbidden in rules.items():
            if module == package or module.startswith(package + "."):
                bad = {
                    i
                    for i in imports(path, top_level_only=False)
                    if any(i == f or i.startswith(f + ".") for f in forbidden)
                }
                assert not bad, f"{module} imports {sorted(bad)}"


def test_no_module_is_too_long_to_read():
    long = {
        str(path.relative_to(SERVICES)): n
        for path in modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"
