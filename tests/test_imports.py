"""The import rules of the package docstrings hold: what may cross the data seam, and who reads
the puzzles' token layouts (parsed from the source, so a new import that breaks a rule fails here)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` gives ``a`` and ``a.b``), nested ones too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _package(name: str) -> dict[str, set[str]]:
    return {str(p.relative_to(REPO)): _imports(p) for p in (REPO / name).rglob("*.py")}


def test_the_imports_parser_sees_nested_and_from_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import a.b\nfrom c import d\ndef f():\n    from e.f import g\n")
    assert _imports(src) == {"a.b", "c", "c.d", "e.f", "e.f.g"}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_reasoners_cross_the_seam_only_through_the_format_and_tasks():
    for path, mods in _package("reasoners").items():
        data = sorted(m for m in mods if _top(m) == "data_gen")
        assert all(m == "data_gen.format" or m.startswith("data_gen.format.") for m in data), (
            f"{path} imports {data}: only data_gen.format may cross the seam"
        )
        if path != "reasoners/tasks.py":
            assert not any(_top(m) == "puzzles" for m in mods), f"{path} imports puzzles, not via Task"


LOWER = {"puzzles": ("data_gen", "reasoners", "solvers"), "solvers": ("data_gen", "reasoners", "puzzles")}


def test_nothing_below_imports_upward_and_no_one_reads_private_kernels():
    for pkg, banned in {**LOWER, "data_gen": ("reasoners",)}.items():
        for path, mods in _package(pkg).items():
            bad = sorted(m for m in mods if _top(m) in banned)
            assert not bad, f"{path} imports {bad}"
    for pkg in ("data_gen", "reasoners", "solvers"):
        for path, mods in _package(pkg).items():
            private = sorted(m for m in mods if m.startswith("puzzles._"))
            assert not private, f"{path} imports private {private}"
