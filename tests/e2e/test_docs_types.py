"""Every docs page's ```python code passes `mypy --strict`, the checker the README advertises.

A page is checked as `test_docs.py` runs it: its blocks, in order, as one module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.docs_blocks import PAGES, CodeBlock, code_blocks

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = re.compile(r"^(?P<file>[^:\n]+\.py):(?P<line>\d+): (?P<text>(?:error|note): .*)$", re.M)


def module_source(blocks: list[CodeBlock]) -> tuple[str, list[tuple[CodeBlock, int]]]:
    """The page's blocks joined into one module, and each module line's block and page line."""
    lines: list[tuple[CodeBlock, int]] = []
    for block in blocks:
        lines.extend((block, block.line + offset) for offset in range(block.source.count("\n")))
    return "".join(block.source for block in blocks), lines


@pytest.fixture(scope="module")
def mypy_messages(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, list[str]]:
    """mypy's messages for each page, located by page line; one mypy run for every page."""
    directory = tmp_path_factory.mktemp("docs_modules")
    files: dict[str, tuple[Path, list[tuple[CodeBlock, int]]]] = {}  # by file name
    for page in PAGES:
        path = directory / f"docs_{page.stem.replace('-', '_')}.py"
        source, lines = module_source(code_blocks(page))
        path.write_text(source)
        files[path.name] = (page, lines)
    # The project's configuration (the pydantic plugin, the celery override); run from the
    # project root so that its mypy cache is reused.
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    result = subprocess.run(
        [*command, "--strict", "--no-error-summary", *(str(directory / name) for name in files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):  # 2: mypy itself failed, so nothing was checked
        pytest.fail(f"mypy failed:\n{result.stdout}{result.stderr}", pytrace=False)
    messages: dict[Path, list[str]] = {page: [] for page in PAGES}
    elsewhere = []  # in the packages the pages import: `make typecheck` reports those
    for match in MESSAGE.finditer(result.stdout):
        # By name: for a module whose code it has cached, mypy may report the path it was
        # checked at before (an earlier run's temporary directory).
        name = Path(match["file"]).name
        if name not in files:
            elsewhere.append(match[0])
            continue
        page, lines = files[name]
        block, line = lines[int(match["line"]) - 1]
        messages[page].append(f"{page.name}:{line} (block {block.number}): {match['text']}")
    if elsewhere or (result.returncode == 1 and not any(messages.values())):
        pytest.fail(f"mypy failed outside the docs:\n{result.stdout}", pytrace=False)
    return messages


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_docs_page_code_passes_mypy_strict(
    page: Path, mypy_messages: dict[Path, list[str]]
) -> None:
    assert not mypy_messages[page], "\n".join(mypy_messages[page])
