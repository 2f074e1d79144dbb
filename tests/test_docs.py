"""Every reference opens: the docs' relative links and the code's citations of docs pages point at files and headings that exist,
and no file names a path outside the repository."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS_CITATION = re.compile(r"(?<![\w/.])((?:docs|tests/data)/[\w./-]+\.md)(#[\w-]+)?")  # in code: docs/<page>.md#<anchor>
# The team's workshop beside the repository, spelled in pieces so that a grep for these names finds no file here, this one included.
OUTSIDE = re.compile("|".join(re.escape(a + b) for a, b in (("../", "shared"), ("ARCHITECTURES", ".md"), ("FIELD-", "NOTES"))))


def tracked(*patterns: str) -> list[Path]:
    """The repository's files matching the patterns: git's list where this is a checkout, else a walk of the tree."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    if proc.returncode == 0:
        return [REPO_ROOT / p for p in proc.stdout.splitlines() if (REPO_ROOT / p).exists()]
    return [p for pattern in patterns for p in REPO_ROOT.glob(f"**/{pattern}")]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen, out = {}, set()
    in_code = False
    for line in page.read_text().splitlines():
        in_code ^= line.startswith("```")
        if in_code or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def broken(target: Path, anchor: str | None) -> str | None:
    if not target.exists():
        return "no such file"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"no heading #{anchor}"
    return None


@pytest.mark.parametrize("page", tracked("*.md"), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_of_a_page_opens(page):
    problems = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for link in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-z]+:", link):
            continue  # an address on the web
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if (why := broken(target, anchor or None)) is not None:
            problems.append(f"{link}: {why}")
    assert not problems, problems


def test_every_docs_page_the_code_cites_opens():
    problems = []
    for source in tracked("*.py", "*.toml", ".ci/run"):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            for path, anchor in DOCS_CITATION.findall(line):
                if (why := broken(REPO_ROOT / path, anchor.lstrip("#") or None)) is not None:
                    problems.append(f"{source.relative_to(REPO_ROOT)}:{number}: {path}{anchor}: {why}")
    assert not problems, problems


def test_no_file_names_a_path_outside_the_repository():
    hits = [f"{p.relative_to(REPO_ROOT)}:{n}" for p in tracked("*.py", "*.md", "*.toml") for n, line in enumerate(p.read_text().splitlines(), 1)
            if OUTSIDE.search(line)]
    assert not hits, hits
