"""Every relative link and every repository path that the README and docs/ name exists (and every
`#anchor` of a link into a Markdown page is one of its headings), so the docs cannot drift from the tree."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "cluster" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("annotators", "pipeline", "schemas", "trainer", "cluster", "tests", "bench", "docs", ".ci")
# a repository path inside backticks: starts with a top-level folder of the repo
PATH = re.compile(r"(?<![\w./~-])((?:%s)/[\w.*/-]*)" % "|".join(re.escape(t) for t in TOP))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text) + re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)


def test_pages_exist():
    assert (REPO / "docs").is_dir() and len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://|^mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_repository_paths_exist(page):
    missing = []
    for span in code_spans(page.read_text()):
        for name in PATH.findall(span):
            name = name.rstrip(".,")
            if "*" in name:
                found = any(REPO.glob(name))
            else:
                found = (REPO / name).exists()
            if not found:
                missing.append(name)
    assert not missing, f"{page.relative_to(REPO)} names paths that do not exist: {sorted(set(missing))}"


def test_section_citations_in_code_exist():
    """Code comments cite `docs/PAGE.md §N`: the page must have a `§N.` heading."""
    cite = re.compile(r"docs/([\w-]+\.md) ((?:§[0-9b]+(?:[-–, ]+)?)+)")
    missing = []
    for path in [*REPO.glob("*/**/*.py"), *REPO.glob("*/**/*.yaml"), *REPO.glob("docs/*.md")]:
        if ".venv" in path.parts:
            continue
        for page, sections in cite.findall(path.read_text(errors="replace")):
            target = REPO / "docs" / page
            headings = target.read_text() if target.is_file() else ""
            for section in re.findall(r"§([0-9b]+)", sections):
                if not re.search(rf"^#+ §{section}\. ", headings, flags=re.M):
                    missing.append(f"{path.relative_to(REPO)}: docs/{page} §{section}")
    assert not missing, missing
