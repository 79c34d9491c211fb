"""The extras of setup.cfg bring what the docs tell their users to run."""

from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from starlette import testclient

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def extra(name: str) -> set[str]:
    """The distribution names an extra requires, as setuptools reads them from setup.cfg."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    lines = config["options.extras_require"][name].strip().splitlines()
    return {canonicalize_name(Requirement(line).name) for line in lines}


def test_the_fastapi_extra_brings_the_http_client_starlettes_test_client_runs_on() -> None:
    # The module Starlette imported under the name `httpx` (httpx2 since Starlette 1.2).
    client = testclient.httpx.__name__
    distributions = importlib.metadata.packages_distributions()[client]

    assert {canonicalize_name(name) for name in distributions} <= extra("fastapi")


def test_the_test_extra_brings_everything_the_fastapi_extra_does() -> None:
    assert extra("fastapi") <= extra("test")
