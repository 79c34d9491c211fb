"""The API reference (docs/reference/*.md, rendered by mkdocstrings) shows the whole public API."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import griffe
import pytest

import repositories
import uow
from repositories import Page

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"


def rendered_paths() -> set[str]:
    """The objects the reference pages render (`::: uow.Database`), modules included."""
    text = "\n".join(page.read_text() for page in sorted(REFERENCE.glob("*.md")))
    return set(re.findall(r"^::: ([\w.]+)$", text, re.MULTILINE))


@pytest.mark.parametrize("package", [uow, repositories], ids=lambda package: package.__name__)
def test_every_public_name_is_rendered_in_the_api_reference(package: ModuleType) -> None:
    rendered = rendered_paths()
    missing = []
    for name in package.__all__:
        module = getattr(package, name).__module__
        # Rendered by its own name, or with the whole module it belongs to (uow.errors).
        paths = {f"{package.__name__}.{name}", f"{module}.{name}", module}
        if not paths & rendered:
            missing.append(name)
    assert missing == []


def test_the_reference_lists_every_field_of_page() -> None:
    # mkdocstrings shows no pydantic field without a docstring: the class's `Attributes:`
    # section is where the reference gets them from.
    module = griffe.load("repositories.schemas", search_paths=[str(ROOT)])
    docstring = module["Page"].docstring
    assert docstring is not None
    sections = docstring.parse("google")
    documented = {
        attribute.name
        for section in sections
        if section.kind is griffe.DocstringSectionKind.attributes
        for attribute in section.value
    }
    assert documented == set(Page.model_fields)
