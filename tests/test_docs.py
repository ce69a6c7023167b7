"""The documentation site (mkdocs.yml, docs/): it builds with --strict (any warning fails: a broken
link or anchor, a page missing from the nav, a docstring the API reference cannot read), every nav
page is in the built site, the API reference holds the docstrings, images exist, and no page sends
readers to a file outside the repository."""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _require_mkdocs():
    """Skip without the doc tools (pip install -e '.[test]'), except under CI, which must build."""
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
        import material  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the docs must build under CI: {err}")
        pytest.skip(f"doc tools not installed: {err}")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _require_mkdocs()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}   # mkdocs-material's banner about MkDocs 2
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    print(f"mkdocs build --strict: {seconds:.1f} s")
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _text(page: Path) -> str:
    """A built page's text: tags removed (inline ones like <code> must not add spaces), entities
    decoded, spaces collapsed."""
    raw = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))
    return " ".join(html.unescape(raw).split())


def test_every_nav_page_is_built(site):
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert len(pages) >= 15
    for page in pages:
        assert (DOCS / page).is_file(), f"nav names {page}, which is not in docs/"
        built = site / Path(page).with_suffix(".html")
        assert built.is_file(), f"{page} was not built"


def test_api_reference_holds_the_docstrings(site):
    import peap_widget as pw

    first = inspect.getdoc(pw.attribute).splitlines()[0].replace("``", "").replace("`", "")
    assert first in _text(site / "api" / "attribution.html")
    assert inspect.getdoc(pw.Circuit).splitlines()[0].replace("`", "")[:40] in _text(site / "api" / "circuits.html")
    # docstring examples are code blocks (docs/griffe_doctest_blocks.py), not nested quotes
    for page in (site / "api").glob("*.html"):
        source = page.read_text(encoding="utf-8")
        assert "<p>&gt;&gt;&gt;" not in source, f"{page.name}: a doctest shown as text"
        assert "<blockquote>" not in source, f"{page.name}: a docstring line starting with '>'"
        assert "```" not in source, f"{page.name}: a code fence shown as text"


def test_every_image_exists(site):
    pattern = re.compile(r"!\[[^\]]*\]\(([^)\s]+)|<img[^>]*\ssrc=\"([^\"]+)\"")
    seen = 0
    for page in PAGES:
        for match in pattern.finditer(page.read_text(encoding="utf-8")):
            ref = match.group(1) or match.group(2)
            if ref.startswith(("http://", "https://", "data:")):
                continue
            assert (page.parent / ref).is_file(), f"{page.relative_to(ROOT)} shows {ref}, which does not exist"
            if page.parent == DOCS:
                assert (site / ref).is_file(), f"{ref} is not in the built site"
            seen += 1
    assert seen >= 5    # the widget guide's screenshots at least


def test_readme_links_to_existing_pages():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"


def test_no_page_points_outside_the_repository():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for outside in ("../shared/DESIGN.md", "shared/DESIGN"):
            assert outside not in text, f"{page.relative_to(ROOT)} mentions {outside}"
