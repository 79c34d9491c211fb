"""The integrations name the extra to install when their framework is missing; `uow` needs none.

A framework is made missing by putting None in `sys.modules` under its name, which makes
`import` raise; the integration module is dropped from `sys.modules` first so that it is
imported afresh. monkeypatch puts both back afterwards.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import uow.integrations

ROOT = Path(__file__).resolve().parents[2]

# extra -> the framework modules to hide
MISSING = {
    "fastapi": ["fastapi"],
    "flask": ["flask"],
    "celery": ["celery", "celery.signals"],
    "rq": ["rq"],
}


def forget_integration(monkeypatch: pytest.MonkeyPatch, extra: str) -> str:
    """Drop the integration module so that the next import runs it again; restored afterwards."""
    module = f"uow.integrations.{extra}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    # A successful import sets the package attribute too; keep the original module there.
    monkeypatch.delattr(uow.integrations, extra, raising=False)
    return module


@pytest.mark.parametrize("extra", sorted(MISSING))
def test_importing_an_integration_without_its_framework_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    module = forget_integration(monkeypatch, extra)
    for name in MISSING[extra]:
        monkeypatch.setitem(sys.modules, name, None)

    install = f'pip install "uow-repositories[{extra}]"'
    with pytest.raises(ImportError, match=re.escape(install)) as caught:
        importlib.import_module(module)

    assert caught.value.name == MISSING[extra][0]
    assert module in str(caught.value)
    assert isinstance(caught.value.__cause__, ImportError)
    assert module not in sys.modules


@pytest.mark.parametrize("extra", sorted(MISSING))
def test_importing_an_integration_with_its_framework_installed_succeeds(
    monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    """The counterpart: the ImportError above comes from the missing framework alone."""
    module = forget_integration(monkeypatch, extra)

    imported = importlib.import_module(module)

    assert imported.__name__ == module
    assert imported.__all__


FRAMEWORKS = ("fastapi", "flask", "celery", "rq", "starlette")


def frameworks_imported_by(modules: str) -> list[str]:
    """The frameworks in `sys.modules` after a fresh interpreter imports `modules`."""
    code = f"import {modules}, sys; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported: list[str] = ast.literal_eval(result.stdout.strip())
    return imported


def test_importing_uow_imports_no_web_or_task_framework() -> None:
    modules = "uow, uow.database, uow.unit_of_work, uow.settings, repositories"
    assert frameworks_imported_by(modules) == []


def test_importing_uow_containers_imports_only_what_dependency_injector_imports() -> None:
    # dependency-injector's providers module imports its wiring module, which imports
    # fastapi.params (and so starlette) whenever FastAPI is installed: not ours to prevent.
    modules = "uow, uow.containers, uow.settings, repositories"
    assert set(frameworks_imported_by(modules)) <= {"fastapi", "starlette"}


def test_importing_an_integration_does_import_its_framework() -> None:
    """The counterpart: the check above sees a framework when one is imported."""
    assert frameworks_imported_by("uow.integrations.flask") == ["flask"]
