"""Every ```python block of every docs page runs, in order, in one module per page."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

from tests.e2e.docs_blocks import DOCS, PAGES, code_blocks


def test_there_are_docs_pages_with_code() -> None:
    assert PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_docs_page_code_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # SQLite files the examples create land in a temp dir
    # A real module in sys.modules: SQLAlchemy and typing.get_type_hints resolve annotations
    # through the module a class was defined in.
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    environ = dict(os.environ)  # pages set DATABASE_* variables: keep them out of other tests
    try:
        for block in code_blocks(page):
            # dont_inherit: this test module's `from __future__ import annotations` must not leak
            # into the pages' code, which decides for itself.
            name = f"{page.name} block {block.number}"
            exec(compile(block.source, name, "exec", dont_inherit=True), module.__dict__)
    finally:
        os.environ.clear()
        os.environ.update(environ)


def test_every_snippet_include_is_well_formed_and_names_an_existing_file() -> None:
    # A formatter once turned `--8<-- "path"` into `--8 < --"path"`, which mkdocs shows as is.
    includes = []
    for page in sorted(DOCS.rglob("*.md")):
        for line in re.findall(r"^--8.*$", page.read_text(), re.MULTILINE):
            match = re.fullmatch(r'--8<-- "([^"]+)"', line)
            assert match, f"{page.name}: malformed snippet line {line!r}"
            includes.append(DOCS.parent / match.group(1))
    assert includes
    assert all(path.is_file() for path in includes), includes
