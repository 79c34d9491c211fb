"""The ```python blocks of the docs pages, which the e2e tests run and type-check.

A page's blocks are one program: each block may use what the blocks above it defined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(path for path in DOCS.rglob("*.md") if BLOCK.search(path.read_text()))


@dataclass(frozen=True)
class CodeBlock:
    """One ```python block: its code, and where it stands on its page."""

    page: Path
    number: int  # 1 for the page's first block
    line: int  # the page's line (1-based) of the block's first line of code
    source: str


def code_blocks(page: Path) -> list[CodeBlock]:
    """The page's ```python blocks, in order."""
    text = page.read_text()
    return [
        CodeBlock(page, number, text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for number, match in enumerate(BLOCK.finditer(text), start=1)
    ]
