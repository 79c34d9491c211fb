"""Every ```python block of every docs page runs, in order, in one module per page."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(path for path in DOCS.rglob("*.md") if BLOCK.search(path.read_text()))


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
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            # dont_inherit: this test module's `from __future__ import annotations` must not leak
            # into the pages' code, which decides for itself.
            source = match.group(1)
            code = compile(source, f"{page.name} block {number}", "exec", dont_inherit=True)
            exec(code, module.__dict__)
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
