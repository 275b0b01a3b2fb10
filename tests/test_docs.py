"""Every citation of docs/reference.md in code, tests and README names a section the page has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r'docs/reference\.md,\s+"([^"]+)"')


def _sections() -> set[str]:
    text = (REPO / "docs" / "reference.md").read_text()
    return {m.group(1).strip() for m in re.finditer(r"^#{2,4} (.+)$", text, re.MULTILINE)}


def _tracked() -> list[str]:
    """The repository's code and prose files (git's view, untracked but not ignored ones included)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    return [f for f in out if f.endswith((".py", ".md", ".yaml")) and (REPO / f).is_file()]


def _citations() -> list[tuple[str, str]]:
    found = []
    for name in _tracked():
        if not name.startswith("docs/"):
            text = (REPO / name).read_text()
            found += [(name, m.group(1)) for m in CITATION.finditer(text)]
    return found


def test_citations_name_existing_sections():
    sections, cited = _sections(), _citations()
    assert len(cited) >= 9  # the code, tests and README cite the page throughout
    missing = [(name, title) for name, title in cited if title not in sections]
    assert not missing, f"citations of sections docs/reference.md does not have: {missing}"


def test_no_citation_of_a_file_the_repository_lacks():
    """REFERENCE.md lives outside the repository; nothing may point there."""
    stale = [(n, t) for n, t in _citations_of("REFERENCE.md")]
    assert not stale, f"citations of REFERENCE.md: {stale}"


def _citations_of(name: str) -> list[tuple[str, str]]:
    here = Path(__file__).name
    return [
        (f, line.strip())
        for f in _tracked()
        if not f.endswith(here)
        for line in (REPO / f).read_text().splitlines()
        if name in line
    ]
