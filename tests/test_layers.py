"""The package's layering (docs/architecture.md): no module imports a layer above its own, and no
import cycle between packages. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import headcast

SRC = Path(headcast.__file__).parent

# rank of each top-level part of the package: a module may import ranks below its own and its own part
RANKS = {
    "__init__": 0, "core": 0,
    "io": 1,
    "model": 2,
    "render": 3, "preprocess": 3,
    "fit": 4, "texture": 4, "synth": 4,
    "animate": 5, "export": 5,
    "stream": 6,
    "view": 7, "demo": 7, "batch": 7,
    "bench": 8,
    "cli": 9,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str) -> set[str]:
    """Every headcast module named by an import statement in the file (absolute or relative)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("headcast")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level if path.name != "__init__.py" else len(module.split("."))]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("headcast"):
                # ``from pkg import sub`` names the submodule, not the package's __init__
                out |= {f"{name}.{a.name}" if f"{name}.{a.name}" in MODULES else name for a in node.names}
    return out


def _find_modules() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _find_modules()


def _modules() -> dict[str, Path]:
    return MODULES


def test_every_part_has_a_rank():
    parts = {_part(m) for m in _modules()}
    assert parts <= set(RANKS), f"add {sorted(parts - set(RANKS))} to RANKS and docs/architecture.md"


def test_no_upward_import():
    bad = []
    for mod, path in _modules().items():
        me = _part(mod)
        for target in _imports(path, mod):
            other = _part(target)
            if other != me and other != "__init__" and RANKS[other] >= RANKS[me]:
                bad.append(f"{mod} imports {target} ({me} rank {RANKS[me]} -> {other} rank {RANKS[other]})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def test_no_package_cycle():
    edges: dict[str, set[str]] = {}
    for mod, path in _modules().items():
        edges.setdefault(mod, set()).update(t for t in _imports(path, mod) if t in _modules())

    seen, stack, cycles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in edges.get(m, ()):
            visit(t)
        stack.pop()

    for m in sorted(edges):
        visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_the_rule_can_fail(tmp_path):
    """The checker sees an upward import when one is there."""
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from headcast.cli import main\n")
    assert "headcast.cli" in _imports(p, "headcast.core.x")
