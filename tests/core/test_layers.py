"""Dependencies between the apps point one way: down.

The layers, lowest first; an app imports only apps of lower layers, never a peer of its own:

    core       base model, errors, transitions, request context; imports no app
    audit      the event chain; imports only core (core reaches it through
               apps.core.audit_hook, which audit fills in its AppConfig.ready)
    accounts   users, teams, memberships
    clusters   clusters, grants, transports
    datasets   imports accounts and clusters, and jobs records dataset versions as inputs,
               so it sits between clusters and jobs
    jobs
    sweeps     built on jobs, read by the registry's lineage
    pipelines  built on jobs and sweeps (a pipeline step may be a sweep)
    registry   model versions made by jobs from datasets
    lineage    draws jobs, datasets and registry versions; serving registers its own
               provider with it, so it sits between registry and serving
    serving
    hub, demo  hub-wide commands and demo seeding: they use everything, nothing uses them

``apps/integrations`` is beside the stack: it imports no Django app at all. The Django project
(``portal/``: settings, urls, the dashboard) is above everything and is not checked.

Every import counts, also one inside a function (the lazy kind that hides a cycle) or under
TYPE_CHECKING, and so does a string that names a module of another app in full
(``enqueue("apps.registry.tasks.x")`` is a dependency, only a later one)."""

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS: dict[str, int] = {
    "core": 0,
    "audit": 1,
    "accounts": 2,
    "clusters": 3,
    "datasets": 4,
    "jobs": 5,
    "sweeps": 6,
    "pipelines": 7,
    "registry": 8,
    "lineage": 9,
    "serving": 10,
    "hub": 11,
    "demo": 11,
}
OUTSIDE = "integrations"  # imports no app; any app may use it

_DOTTED = re.compile(r"^apps(\.\w+)+$")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def _module_of(path: Path, apps_dir: Path) -> list[str]:
    parts = list(path.relative_to(apps_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts


def _targets(tree: ast.AST, module: list[str], is_package: bool):
    """(line, dotted name) of everything a module depends on."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            # ``from apps import jobs`` names the app in the alias, not the module.
            if name == "apps":
                for alias in node.names:
                    yield node.lineno, f"apps.{alias.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value):
            yield node.lineno, node.value


def layer_violations(apps_dir: Path) -> list[Violation]:
    """Every import under ``apps_dir`` that points sideways or up, and every app with no layer."""
    found: list[Violation] = []
    unplaced: set[str] = set()
    for path in sorted(apps_dir.rglob("*.py")):
        module = _module_of(path, apps_dir)
        if len(module) < 2:
            continue
        source = module[1]
        rel = str(path.relative_to(apps_dir.parent))
        if source != OUTSIDE and source not in LAYERS:
            if source not in unplaced:
                unplaced.add(source)
                found.append(Violation(rel, 0, source, "(no layer: add the app to LAYERS)"))
            continue
        tree = ast.parse(path.read_text(), filename=rel)
        for line, name in _targets(tree, module, path.name == "__init__.py"):
            parts = name.split(".")
            if parts[0] != "apps" or len(parts) < 2 or parts[1] == source:
                continue
            target = parts[1]
            if source == OUTSIDE:
                found.append(Violation(rel, line, source, name))
            elif target == OUTSIDE:
                continue
            elif target not in LAYERS or LAYERS[target] >= LAYERS[source]:
                found.append(Violation(rel, line, source, name))
    return found


def test_it_finds_no_import_pointing_up_in_the_apps():
    violations = layer_violations(ROOT / "apps")
    assert not violations, "imports against the layers:\n" + "\n".join(map(str, violations))


def test_every_app_has_a_layer():
    apps = {p.name for p in (ROOT / "apps").iterdir() if (p / "__init__.py").exists()}
    assert apps - {OUTSIDE} <= set(LAYERS)


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    apps_dir = tmp_path / "apps"
    for rel, text in files.items():
        path = apps_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == tmp_path:
                break
            (parent / "__init__.py").touch()
        path.write_text(text)
    return apps_dir


@pytest.mark.parametrize(
    ("rel", "text", "target"),
    [
        ("core/views.py", "from apps.jobs.selectors import job_list\n", "apps.jobs.selectors"),
        ("core/transitions.py", "import apps.audit.services\n", "apps.audit.services"),
        ("jobs/services.py", "def f():\n    from apps.serving import models\n", "apps.serving"),
        ("jobs/services.py", "from apps import registry\n", "apps.registry"),
        (
            "jobs/services.py",
            'enqueue("apps.registry.tasks.model_version_register_from_job", 1)\n',
            "apps.registry.tasks",
        ),
        ("audit/services.py", "from apps.accounts.models import User\n", "apps.accounts.models"),
        ("integrations/slurm/ssh.py", "from apps.core.errors import Conflict\n", "apps.core.errors"),
        ("datasets/views.py", "from apps.jobs import selectors\n", "apps.jobs"),
        ("sweeps/services.py", "from apps.pipelines.models import Pipeline\n", "apps.pipelines.models"),
        ("newapp/models.py", "x = 1\n", "(no layer"),
    ],
)
def test_it_catches_a_planted_upward_import(tmp_path, rel, text, target):
    violations = layer_violations(_plant(tmp_path, {rel: text}))
    assert len(violations) == 1
    assert violations[0].target.startswith(target)


def test_it_resolves_relative_imports_and_allows_downward_ones(tmp_path):
    apps_dir = _plant(
        tmp_path,
        {
            "serving/services.py": (
                "from . import models\nfrom .backends import x\nfrom apps.registry.models import ModelVersion\n"
                "from apps.integrations.serving import base\nfrom apps.core.errors import Conflict\n"
                'enqueue("apps.serving.tasks.deploy", 1)\n'
            ),
            "serving/sub/__init__.py": "from .. import models\n",
            "audit/services.py": "from apps.core import context\n",
        },
    )
    assert layer_violations(apps_dir) == []
    (apps_dir / "core" / "x.py").parent.mkdir()
    (apps_dir / "core" / "__init__.py").touch()
    (apps_dir / "core" / "x.py").write_text("from ..audit import services\n")
    assert [str(v) for v in layer_violations(apps_dir)] == ["apps/core/x.py:1: core imports apps.audit"]
