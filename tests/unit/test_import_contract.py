"""The engine is pure and the layers point down, checked from the source (import-linter
cannot see standard-library imports such as `socket` or `asyncio`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.builders import REPO

PACKAGE = REPO / "healer"
IO_MODULES = {
    "asyncio", "anyio", "aiohttp", "kubernetes_asyncio", "apprise", "pynvml", "socket", "ssl",
    "subprocess", "threading", "multiprocessing", "urllib", "http", "prometheus_client", "requests",
    "httpx", "time", "structlog", "logging", "random", "shutil", "signal", "select", "selectors",
}  # fmt: skip
# what each pure layer may import from healer
ALLOWED = {
    "model": {"healer.model"},
    "rules": {"healer.model", "healer.rules"},
    "engine": {"healer.model", "healer.rules", "healer.engine"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "healer")
    return found


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_pure_layers_import_no_io(layer: str) -> None:
    for path in _modules(layer):
        bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_point_down(layer: str) -> None:
    for path in _modules(layer):
        ours = {m for m in _imports(path) if m == "healer" or m.startswith("healer.")}
        bad = {m for m in ours if not any(m == a or m.startswith(a + ".") for a in ALLOWED[layer])}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)} from a higher layer"


CLOCK = {"now", "utcnow", "today", "time", "monotonic"}


def _reads_clock(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in CLOCK
        and isinstance(node.value, ast.Name)
        and node.value.id in ("datetime", "date", "time")
    )


@pytest.mark.parametrize("layer", ["engine", "model"])
def test_the_engine_never_reads_the_clock_or_the_filesystem(layer: str) -> None:
    for path in _modules(layer):
        where = path.relative_to(REPO)
        for node in ast.walk(ast.parse(path.read_text())):
            assert not _reads_clock(node), f"{where}:{getattr(node, 'lineno', 0)} reads the clock; take `now`"
            assert not (isinstance(node, ast.Name) and node.id == "open"), f"{where} opens a file"
        assert not {"os", "pathlib", "io"} & {m.split(".")[0] for m in _imports(path)}, where


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import socket\nfrom healer.runtime import daemon\nx = datetime.now()\n")
    assert {"socket", "healer.runtime"} <= _imports(probe)
    assert any(_reads_clock(n) for n in ast.walk(ast.parse(probe.read_text())))
