"""The README a newcomer skims and the docs pages it links: short, every link lands, its snippet lists the
models before it needs any weights (so it runs offline up to that line)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 120


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target} points nowhere"
        if anchor and file.suffix == ".md":
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)}
            assert anchor in slugs, f"{page.name}: #{anchor} is no heading of {file.name}"


def test_the_readme_snippet_lists_models_before_it_loads_weights():
    snippet = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[1]
    lines = snippet.splitlines()
    listing = next(i for i, line in enumerate(lines) if "list_models" in line)
    loading = next(i for i, line in enumerate(lines) if "pretrained=True" in line)
    assert listing < loading
    namespace = {}
    exec("\n".join(lines[:loading]), namespace)  # offline (the tests set HF_HUB_OFFLINE): it runs
    assert "dinat_tiny" in namespace["timm"].list_models("dinat*")
