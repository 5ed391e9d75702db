"""The Python that the shell scripts run inline imports names that exist.

e2e/kind/cluster.sh feeds heredocs and `-c` strings to the venv's python; nothing else
imports them, so a renamed function would only show when `make kind-up` runs, 20 minutes
into a cold CI run.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "e2e").rglob("*.sh")) + sorted((ROOT / ".ci").glob("*"))
HEREDOC = re.compile(r"python\"? - [^\n]*<<'PY'\n(.*?)\nPY\n", re.S)
DASH_C = re.compile(r"python\"? -c \"([^\"]*)\"")


def inline_snippets(text: str) -> list[str]:
    return HEREDOC.findall(text) + DASH_C.findall(text)


def imported_names(source: str) -> list[tuple[str, str | None]]:
    """(module, name) for every `from module import name`, (module, None) for `import module`."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return found


def test_the_scripts_hold_inline_python() -> None:
    text = (ROOT / "e2e/kind/cluster.sh").read_text()
    assert len(inline_snippets(text)) >= 3


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_python_imports_resolve(script: Path) -> None:
    if not script.is_file():
        return
    for snippet in inline_snippets(script.read_text()):
        for module, name in imported_names(snippet):
            loaded = importlib.import_module(module)
            if name is not None and not hasattr(loaded, name):
                # `from package import submodule`
                importlib.import_module(f"{module}.{name}")


def test_a_missing_name_is_caught() -> None:
    snippet = inline_snippets(
        "x | python - a <<'PY'\nfrom kinfer_dev.localcluster import nope\nPY\n"
    )
    assert imported_names(snippet[0]) == [("kinfer_dev.localcluster", "nope")]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("kinfer_dev.localcluster.nope")
