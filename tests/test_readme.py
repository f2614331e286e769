"""The README as a newcomer runs it: `.ci/run` runs exactly its install and test commands, so each must stand alone in
one of its bash blocks; every relative link in the README and docs/ leads to a file; the quickstart links the
premise check and the evidence page (the findings live there, the README keeps a summary)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _bash_blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    ci = [line for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line and not line.startswith(("#", "set ", "cd ", "export "))]
    blocks = _bash_blocks(README.read_text(encoding="utf-8"))
    assert ci == ["pip install -r requirements.txt", "python -m pytest"]
    for command in ci:
        assert [command] in blocks, f"README has no bash block holding exactly `{command}`"


def test_every_relative_link_in_readme_and_docs_resolves():
    broken = []
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_quickstart_links_the_premise_check_and_the_summary_links_the_evidence():
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Quickstart"):text.index("\n## ", text.index("## Quickstart") + 1)]
    assert "(docs/before_you_train.md)" in quickstart
    evidence = text[text.index("## Evidence"):text.index("\n## ", text.index("## Evidence") + 1)]
    assert "(docs/evidence.md)" in evidence and len(evidence.strip().splitlines()) <= 8
