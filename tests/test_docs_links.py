"""Every relative link and #anchor in README.md and docs/*.md resolves, with GitHub's heading
slugs; so does every mention of a docs page (docs/<page>.md[#anchor]) in the notebooks, their
generator, the configs and the sources."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_DOCS_MENTION = re.compile(r"(?<![\w/.])(README\.md|docs/[\w.-]+\.md)(#[\w-]+)?")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (link text, no code or emphasis marks),
    lowercased, every character but letters, digits, spaces, `-` and `_` dropped, each space
    turned into `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # emphasis underscores, not snake_case
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for _, heading in _HEADING.findall(_FENCE.sub("", markdown)):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(markdown: str) -> list[str]:
    """Link targets of a page, outside fenced code blocks and code spans."""
    return _LINK.findall(_CODE_SPAN.sub("", _FENCE.sub("", markdown)))


def broken(page: Path, target: str) -> str | None:
    """Why `target`, linked from `page`, does not resolve; None when it does."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
        return None
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
        return f"{path}: no such file"
    if anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
        return f"#{anchor}: no such heading in {file.name}"
    return None


def problems(pages) -> list[str]:
    return [
        f"{page.relative_to(ROOT)}: ({target}) {why}"
        for page in pages
        for target in links(page.read_text(encoding="utf-8"))
        if (why := broken(page, target))
    ]


def test_slugs_follow_github():
    assert (
        github_slug("`make demo`: the whole flow here, on CPU")
        == "make-demo-the-whole-flow-here-on-cpu"
    )
    assert github_slug("2. The model: EfficientNet + DOLG + sub-center ArcFace") == (
        "2-the-model-efficientnet--dolg--sub-center-arcface"
    )
    assert github_slug("Moving data, models and wheels: `python -m landmarks kaggle ...`") == (
        "moving-data-models-and-wheels-python--m-landmarks-kaggle-"
    )
    assert github_slug("Search (`knn_backend`)") == "search-knn_backend"
    assert anchors("# A\n## A\n```\n# A\n```\n### A!\n") == {"a", "a-1", "a-2"}


def test_a_broken_link_or_anchor_is_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n## Part one\n", encoding="utf-8")
    page.write_text(
        "# Top\n[ok](other.md#part-one) [ok](#top) [ok](https://example.com/x#y) `[no](gone.md)`\n"
        "[file](gone.md) [anchor](other.md#part-two) [here](#bottom)\n",
        encoding="utf-8",
    )
    assert [broken(page, t) for t in links(page.read_text())] == [
        None,
        None,
        None,
        "gone.md: no such file",
        "#part-two: no such heading in other.md",
        "#bottom: no such heading in page.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    assert problems([page]) == []


def test_mentions_of_docs_pages_resolve():
    sources = [
        *sorted((ROOT / "notebooks").glob("*.py")),
        *sorted((ROOT / "notebooks").glob("*.ipynb")),
        *sorted((ROOT / "configs").glob("*.yaml")),
        *sorted((ROOT / "src").rglob("*.py")),
    ]
    bad = []
    for source in sources:
        for path, anchor in _DOCS_MENTION.findall(source.read_text(encoding="utf-8")):
            if why := broken(ROOT / "README.md", path + anchor):
                bad.append(f"{source.relative_to(ROOT)}: {path}{anchor}: {why}")
    assert bad == []
