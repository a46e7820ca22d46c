"""The shape of the code: no import cycles, and importing a public piece builds nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "schemas")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
    return {target for target in targets if target in modules}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(graph[name]):
            cycle = visit(target, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = import_graph()
    # A deliberate cycle, as the settings once had through the rate limiter and the metrics.
    graph["worker.observability.metrics"] = {
        *graph["worker.observability.metrics"],
        "worker.settings",
    }
    graph["worker.settings"] = {*graph["worker.settings"], "worker.coordination.ratelimit"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert {"worker.settings", "worker.coordination.ratelimit"} <= set(cycle)


PROBE = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("worker", "celery"))))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "from worker.publisher import EventPublisher, publish_events",
        "import schemas, schemas.event, schemas.jsonschema",
        "from worker.outbox.table import outbox",
    ],
)
def test_importing_a_public_piece_builds_no_app_and_writes_nothing(
    imports: str, tmp_path: Path
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert "worker.celery" not in loaded
    assert not [m for m in loaded if m == "celery" or m.startswith("celery.")]
    assert not [m for m in loaded if m.startswith(("worker.apply", "worker.intake"))]
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []


def test_celery_finds_the_app_by_its_own_convention(tmp_path: Path) -> None:
    """``celery -A worker`` looks for ``worker.app``, then ``worker.celery.app``."""
    probe = (
        "from celery.app.utils import find_app; app = find_app('worker'); "
        "print(app.main, sorted(n for n in app.tasks if n.startswith('order_sync.')))"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [
        "order_sync",
        "['order_sync.apply_order_event',",
        "'order_sync.outbox_poll']",
    ]
