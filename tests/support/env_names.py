"""The environment variables the bridge reads, found in its source rather than kept by hand.

A list kept by hand goes stale the day someone adds a setting; this one is read from the code
(`env.get("X")`, `os.environ.get("X")`, `_url(env, "X", ...)`, `os.environ["X"]`), so the
test session clears every one of them and the generated .env is checked to mention each.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

BRIDGE_DIR = Path(__file__).resolve().parents[2] / "bridge"
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# Prefixes of variables the bridge owns; anything so named is cleared for tests too, in case a
# setting is read in a way the scan does not recognise. LITESTREAM_: the replica's S3 keys,
# which Litestream reads from the environment the bridge hands it.
PREFIXES = ("BRIDGE_", "GHL_", "INSTANTLY_", "WEB_", "LITESTREAM_")
# Read by the test support code itself (where the vendors' specs are), never by the bridge.
TEST_SUPPORT = frozenset({"BRIDGE_SPECS_DIR"})


@functools.lru_cache(maxsize=1)
def bridge_env_names() -> frozenset[str]:
    """Every variable name the package under bridge/ reads from an environment."""
    found: set[str] = set()
    for path in sorted(BRIDGE_DIR.rglob("*.py")):
        found |= names_in(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return frozenset(found)


def names_in(tree: ast.Module) -> set[str]:
    """Variable names read in one module, constants named at module level resolved."""
    constants = _module_constants(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        for arg in _name_args(node):
            value = _string(arg, constants)
            if value is not None and _NAME.fullmatch(value):
                found.add(value)
    return found


def _name_args(node: ast.AST) -> list[ast.expr]:
    """The argument holding a variable's name, if `node` reads one."""
    if isinstance(node, ast.Subscript) and _is_env(node.value):
        return [node.slice]
    if not isinstance(node, ast.Call) or not node.args:
        return []
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault", "pop"):
        return [node.args[0]] if _is_env(func.value) else []
    # Helpers that take the environment first and the variable's name second.
    if len(node.args) >= 2 and _is_env(node.args[0]):
        return [node.args[1]]
    return []


def _is_env(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "env"
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _string(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _module_constants(tree: ast.Module) -> dict[str, str]:
    constants = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            constants[node.targets[0].id] = node.value.value
    return constants
