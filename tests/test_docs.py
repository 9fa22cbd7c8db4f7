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


def _messages_pointing_at_docs():
    """Every string in the package that sends a reader to documentation: ``docs/X.md`` (with ``, section 'Y'``
    where it names one) or the README (``the README's 'Y' section``)."""
    import ast

    found = []
    for path in sorted((ROOT / "dinat_timm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            for match in re.finditer(r"(docs/[\w.-]+\.md)(?:, section '([^']+)')?", text):
                found.append((path.name, match[1], match[2]))
            for match in re.finditer(r"README(?:'s '([^']+)' section|\b)", text):
                if match[1] or re.search(r"\bsee the README\b", text):
                    found.append((path.name, "README.md", match[1]))
    return found


def test_every_message_that_points_at_documentation_names_a_file_and_section_that_exist():
    pointers = _messages_pointing_at_docs()
    assert ("_api.py", "docs/export.md", "TorchScript") in pointers  # the TorchScript refusal among them
    for where, page, section in pointers:
        file = ROOT / page
        assert file.is_file(), f"{where} points at {page}, which does not exist"
        if section:
            headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
            assert section in headings, f"{where} points at {page}, section {section!r}: no such heading"


def test_the_checker_sees_a_pointer_to_a_section_that_is_gone(tmp_path):
    text = "see the README's 'Export' section"
    assert re.search(r"README(?:'s '([^']+)' section|\b)", text)[1] == "Export"
    assert "Export" not in re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.M)
