"""Every relative link in README.md and docs/ resolves: to a file or folder that exists and, where
the link names an anchor in a markdown file, to a heading there (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code spans removed."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, CODE_SPAN.sub("", line)


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: the heading's text lower-cased, every
    character that is not a letter, digit, space, hyphen or underscore dropped, spaces turned to
    hyphens; a repeated slug gets -1, -2, ... in order."""
    anchors, seen = set(), {}
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link's text stays
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """The relative links in markdown file ``path`` that do not resolve, as 'line N: target (why)'.
    Links with a scheme (http:, https:, mailto:) are not checked; a leading '/' is the repo root."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for number, line in _prose_lines(text):
        targets = [m.group(1) for m in INLINE_LINK.finditer(line)]
        reference = REFERENCE_LINK.match(line)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            if SCHEME.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            file_part = unquote(file_part)
            if not file_part:
                resolved = path
            elif file_part.startswith("/"):
                resolved = root / file_part.lstrip("/")
            else:
                resolved = path.parent / file_part
            if not resolved.exists():
                problems.append(f"line {number}: {target} (no such file)")
            elif anchor and resolved.is_file() and resolved.suffix == ".md":
                if unquote(anchor).lower() not in github_anchors(resolved.read_text(encoding="utf-8")):
                    problems.append(f"line {number}: {target} (no heading with that anchor)")
    return problems


def test_the_checker_finds_missing_files_and_anchors_and_nothing_else(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.md").write_text(
        "# Other page\n\n## SAME autoencoder (`sa3core.models.same`)\n## Again\n## Again\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "[fine](sub/other.md) and [fine too](sub/other.md#same-autoencoder-sa3coremodelssame), "
        "[second of a repeated heading](sub/other.md#again-1), [a folder](sub/), [here](#page), "
        "[web](https://example.com/nowhere.md), [mail](mailto:a@b.c), [root](/sub/other.md)\n"
        "[missing file](sub/gone.md)\n"
        "text [missing anchor](sub/other.md#no-such-heading) text\n"
        "`[in code](not/checked.md)`\n"
        "```\n[in a fence](not/checked/either.md)\n```\n"
        "[ref]: ../outside-the-root.md\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "line 3: sub/gone.md (no such file)",
        "line 4: sub/other.md#no-such-heading (no heading with that anchor)",
        "line 9: ../outside-the-root.md (no such file)",
    ]


def test_github_anchors_follow_githubs_slugs():
    text = "# sa3 architecture and internal contracts\n## Training time (wall clock, 2 shared CPU cores)\n"
    assert github_anchors(text) == {
        "sa3-architecture-and-internal-contracts",
        "training-time-wall-clock-2-shared-cpu-cores",
    }


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_in_readme_and_docs_resolve(path):
    assert broken_links(path) == []
