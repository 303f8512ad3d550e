"""The house's arrows point one way: each wing imports only what is below it.

Read from the source (every `import` statement, including those inside functions), so a new module or a
late import cannot slip past. The rules are the architecture's (ARCHITECTURE.md, "Layout"):
- `avc.media` and `avc.opensips` (the RTP and SIP sides) know nothing of the conversation, the engines or the
  banking dialogue, nor of the call lifecycle above them; of the top level they may use only `avc.metrics`;
- `engines` knows nothing of `avc` or `banking`; `banking` knows nothing of `avc` (nor SIP or RTP);
- no product module imports `tests` or `demo`, and the demo imports nothing from `tests`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# package prefix -> module prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "avc.media": ("avc.conversation", "avc.call", "avc.connector", "avc.app", "avc.cli", "engines", "banking"),
    "avc.opensips": ("avc.conversation", "avc.call", "avc.connector", "avc.app", "avc.cli", "engines", "banking"),
    "engines": ("avc", "banking"),
    "banking": ("avc",),
    "avc": ("tests", "demo"),
    "demo": ("tests",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement in `path` names (`from a.b import c` names `a.b` and `a.b.c`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    broken = []
    for path in sorted((REPO_ROOT / package.replace(".", "/")).rglob("*.py")):
        for target in sorted(imported_modules(path)):
            if any(target == bad or target.startswith(bad + ".") for bad in forbidden):
                broken.append(f"{module_name(path)} imports {target}")
    return broken


def product_modules() -> list[str]:
    return sorted(module_name(p) for pkg in ("avc", "engines", "banking") for p in (REPO_ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN.items(), ids=list(FORBIDDEN))
def test_a_wing_never_imports_the_layers_above_it(package: str, forbidden: tuple[str, ...]) -> None:
    assert violations(package, forbidden) == []


def test_the_rule_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("def f():\n    from banking.dialogue import Dialogue\n    import engines.base\n")
    assert {"banking.dialogue", "banking.dialogue.Dialogue", "engines.base"} <= imported_modules(module)


TOP_LEVEL = {"avc.app", "avc.call", "avc.connector", "avc.config", "avc.metrics", "avc.logs", "avc.ops_http", "avc.cli"}
WINGS = ("avc.media", "avc.opensips", "avc.conversation")


def test_every_connector_module_sits_in_a_wing_or_at_the_top_on_purpose() -> None:
    # The top level holds the call lifecycle, the process and operations; anything else belongs in a wing.
    stray = [
        name
        for name in product_modules()
        if name.startswith("avc.")
        and name not in TOP_LEVEL
        and not name.startswith(tuple(w + "." for w in WINGS))
        and name not in WINGS
    ]
    assert stray == []
