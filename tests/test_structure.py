"""The layout stays as the docs draw it: no import cycle, small modules, one error tree, names
spelled once, nothing that points at files outside the repository."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from ingest.errors import VidbriefError
from ingest.names import STEP_NAMES
from pipeline.chain import CHAIN

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "raybridge", "pipeline", "webhooks", "vidbrief")
#: What each package may import: the CLI sits on the bridge, the bridge on the steps and the
#: webhooks, and everything on the contract (ingest), which imports nothing of the others.
LAYERS = {
    "ingest": {"ingest"},
    "pipeline": {"pipeline", "ingest"},
    "webhooks": {"webhooks", "ingest"},
    "raybridge": {"raybridge", "pipeline", "webhooks", "ingest"},
    "vidbrief": set(PACKAGES),
}
#: Packages whose modules stay small enough to read in one sitting.
SMALL_MODULE_PACKAGES = ("ingest", "raybridge", "webhooks")
MAX_MODULE_LINES = 400
#: Modules that are one noun however long: the settings model is one field (with its
#: description, which the README's table is generated from) per setting.
ONE_NOUN = {"ingest.settings": 600}
#: Exceptions that must be a library's type only (see the tree in ingest/errors.py).
LIBRARY_TYPED = {
    "pipeline.fetch.RefusedRequest",
    "pipeline.fetch.DeadlineExceeded",
    "pipeline.fetch.OverLimitRequest",
}
#: Documents of the people who work on vidbrief, not part of it: the code never cites them.
OUTSIDE = re.compile(r"\b(CONTRACT|FACTS|DESIGN|STYLE)\.md\b|\bissue #?\d+\b", re.IGNORECASE)


def modules() -> dict[str, Path]:
    """Every module of the project, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, at any depth of the file (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_the_project_import_graph_has_no_cycle() -> None:
    known = modules()
    graph = {name: imported(path, name, known) for name, path in known.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
    assert set(order) == set(known)


def test_packages_import_only_the_layers_below_them() -> None:
    known = modules()
    crossing = {
        (name, target)
        for name, path in known.items()
        for target in imported(path, name, known)
        if target.split(".")[0] not in LAYERS[name.split(".")[0]]
    }
    assert crossing == set()


def test_modules_of_the_service_packages_stay_small() -> None:
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if name.startswith(SMALL_MODULE_PACKAGES)
    }
    too_long = {n: s for n, s in sizes.items() if s > ONE_NOUN.get(n, MAX_MODULE_LINES)}
    assert too_long == {}


def test_every_error_the_project_defines_is_in_the_one_tree() -> None:
    outside = []
    for name in modules():
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not (inspect.isclass(value) and issubclass(value, BaseException)):
                continue
            if value.__module__ != name or f"{name}.{attr}" in LIBRARY_TYPED:
                continue
            if not issubclass(value, VidbriefError):
                outside.append(f"{name}.{attr}")
    assert outside == []


def test_the_chain_declares_the_contract_step_names_in_order() -> None:
    assert tuple(spec.name for spec in CHAIN) == STEP_NAMES


def test_nothing_cites_a_document_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    texts = [p for p in tracked if p.endswith((".py", ".md", ".yaml", ".toml", ".sh", ".html"))]
    texts += ["Dockerfile", ".ci/run"]
    cited = {
        path: m.group(0)
        for path in texts
        if (ROOT / path).is_file()
        and path != "tests/test_structure.py"
        and (m := OUTSIDE.search((ROOT / path).read_text(errors="replace")))
    }
    assert cited == {}
