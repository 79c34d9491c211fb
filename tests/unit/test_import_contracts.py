"""The import contracts in pyproject.toml cover every module they are about."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import uow
import uow.integrations

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return {contract["name"]: contract for contract in config["contracts"]}


def test_the_core_contract_lists_every_uow_module_outside_the_integrations() -> None:
    core = {f"uow.{m.name}" for m in pkgutil.iter_modules(uow.__path__) if m.name != "integrations"}
    contract = contracts()["the core never imports the framework integrations"]
    assert set(contract["source_modules"]) == core


def test_the_independence_contract_lists_every_integration() -> None:
    public = {
        f"uow.integrations.{m.name}"
        for m in pkgutil.iter_modules(uow.integrations.__path__)
        if not m.name.startswith("_")
    }
    contract = contracts()["the integrations do not import one another"]
    assert set(contract["modules"]) == public
