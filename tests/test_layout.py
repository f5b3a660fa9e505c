"""The layout's rules: no import cycle in bridge/, the core packages never reach Flask or
the web layer, every package ships, and an installed (not editable) bridge works from
any directory."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.faults.procs import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bridge"
# The packages that take plain data and clients in and must run without a web server.
CORE = ("bridge.sync", "bridge.store", "bridge.events", "bridge.clients", "bridge.locations")
WEB_LIBRARIES = ("flask", "flask_wtf", "werkzeug")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(module: str, at_import_time: bool) -> set[str]:
    """What a module imports: bridge modules by name, other libraries by top-level name.

    With at_import_time, only what runs when the module is imported: not imports inside
    functions, nor those under `if TYPE_CHECKING:`.
    """
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found: set[str] = set()
    for node in _walk(tree, at_import_time):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in MODULES
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found |= {name if name.startswith("bridge") else name.split(".")[0] for name in names}
    return found


def _walk(tree: ast.AST, at_import_time: bool):
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if at_import_time and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if (
            at_import_time
            and isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            pending.extend(node.orelse)
            continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


def loaded_with(module: str) -> set[str]:
    """Every module importing `module` loads (its packages' __init__ files included)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in MODULES:
            continue
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        pending += parents + sorted(imports(name, at_import_time=True))
    return seen


def test_no_import_cycle_in_bridge():
    # Every import counts here, a late one inside a function too: a late import that
    # hides a cycle is still a cycle.
    graph = {
        name: sorted(i for i in imports(name, at_import_time=False) if i in MODULES)
        for name in MODULES
    }
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in graph[name]:
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", CORE)
def test_core_packages_never_import_flask_or_the_web_layer(package):
    offenders = {}
    for name in MODULES:
        if name == package or name.startswith(package + "."):
            reached = loaded_with(name)
            bad = sorted(r for r in reached if r in WEB_LIBRARIES or r.startswith("bridge.web"))
            if bad:
                offenders[name] = bad
    assert not offenders, f"these modules load the web layer: {offenders}"


# What each package may import of the bridge (README, Layout); top-level modules are
# start-up and configuration, and anything may import them as listed.
ROOT_MODULES = ("bridge.config", "bridge.settings", "bridge.clock", "bridge.logs")
ALLOWED = {
    "bridge.events": ("bridge.events", "bridge.clock"),
    "bridge.clients": ("bridge.clients", "bridge.logs"),
    "bridge.store": ("bridge.store", "bridge.events", *ROOT_MODULES),
    # Which locations and workspaces there are: read from the environment and settings.
    "bridge.locations": ("bridge.locations", "bridge.config", "bridge.clock"),
    "bridge.sync": (
        "bridge.sync",
        "bridge.locations",
        "bridge.store",
        "bridge.events",
        "bridge.clients",
        *ROOT_MODULES,
    ),
    "bridge.reconcile": (
        "bridge.reconcile",
        "bridge.locations",
        "bridge.sync",
        "bridge.store",
        "bridge.events",
        "bridge.clients",
        *ROOT_MODULES,
    ),
}
FORBIDDEN = {"bridge.setup": ("bridge.web", "bridge.cli"), "bridge.cli": ("bridge.web",)}


@pytest.mark.parametrize("package", [*ALLOWED, *FORBIDDEN])
def test_each_package_imports_only_what_the_layout_allows(package):
    wrong = {}
    for name in MODULES:
        if name != package and not name.startswith(package + "."):
            continue
        targets = {i for i in imports(name, at_import_time=False) if i.startswith("bridge")}
        if package in ALLOWED:
            bad = [t for t in targets if not _within(t, ALLOWED[package])]
        else:
            bad = [t for t in targets if _within(t, FORBIDDEN[package])]
        if bad:
            wrong[name] = sorted(bad)
    assert not wrong, f"imports the layout does not allow: {wrong}"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_importing_the_core_loads_no_web_module():
    core = [name for name in MODULES if name.startswith(CORE)]
    probe = (
        "import importlib, json, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {WEB_LIBRARIES!r}"
        " or m.startswith('bridge.web'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_every_package_ships():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {module_name(p.parent) for p in PACKAGE.rglob("__init__.py")}
    on_disk |= {"bridge.templates", "bridge.store.migrations", "bridge.defaults"}
    assert listed == on_disk


@pytest.mark.slow
def test_an_installed_bridge_migrates_and_runs_from_another_directory(tmp_path):
    """pip install . (not editable) into a fresh venv; then, from an unrelated folder,
    `instantly-ghl-bridge migrate` finds the shipped migrations and defaults and `instantly-ghl-bridge run` serves."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The dependencies come from this test run's environment (no second download); the
    # bridge itself only from the wheel pip builds. A directory named in a .pth file has
    # its own .pth files ignored, so this environment's editable bridge stays out.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GHL_", "INSTANTLY_"))
    }
    clean_env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(python), "-c", "import bridge.store.migrations as m; print(m.__file__)"],
        cwd=elsewhere,
        env=clean_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(site), where

    bridge_cmd = str(env_dir / "bin" / "instantly-ghl-bridge")
    migrated = subprocess.run(
        [bridge_cmd, "migrate"], cwd=elsewhere, env=clean_env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "applied m001_event_inbox" in migrated.stdout
    assert (elsewhere / "instance" / "bridge.sqlite3").exists()

    port = free_port()
    run_env = {**clean_env, "PORT": str(port)}
    proc = subprocess.Popen(
        [bridge_cmd, "run"],
        cwd=elsewhere,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = wait_until(lambda: _health(port, proc), 30, "/healthz of the installed bridge")
        assert body["database"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "bridge running" in output


def _health(port: int, proc: subprocess.Popen) -> dict | None:
    """/healthz's answer (200 or 503: either means it serves), None while not listening."""
    assert proc.poll() is None, "instantly-ghl-bridge run ended early"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        return json.load(exc)
    except OSError:
        return None
