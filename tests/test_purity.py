"""The pure layers must not import aiohttp (design.md: only server.py and the API client do I/O)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PURE_MODULES = [
    "bot.engine",
    "bot.messages",
    "bot.protocol.wire",
    "bot.protocol.signature",
    "bot.config",
    "bot.reload",
    "bot.sources",
    "bot.engine.outcome",  # plan(): what a push means, decided without I/O
]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_pure_layers_do_not_import_aiohttp():
    imports = "; ".join(f"import {name}" for name in PURE_MODULES)
    code = (f"import sys; {imports}; "
            "loaded = sorted(m for m in sys.modules if m == 'aiohttp' or m.startswith('aiohttp.')); "
            "assert not loaded, loaded; print('pure')")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pure"


@pytest.mark.parametrize("name", PURE_MODULES)
def test_each_pure_module_alone(name):
    result = _run(f"import sys, {name}; assert 'aiohttp' not in sys.modules, {name!r}; print('ok')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_check_itself_can_fail():
    """The subprocess sees aiohttp when something does import it, so the tests above are meaningful."""
    result = _run("import sys, bot.server; print('aiohttp' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
