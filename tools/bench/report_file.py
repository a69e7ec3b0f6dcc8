"""Writing benchmark figures into BENCHMARKS.md: a run's table replaces the generated part and
keeps the hand-written findings below it; a named section replaces the one with its heading."""
from __future__ import annotations

from pathlib import Path

FINDINGS_HEADING = "## Where the time goes"     # from here on the file is written by hand


def write_table(path: Path, table: str) -> None:
    """`table` (the whole generated part) followed by the file's findings, kept as they are."""
    findings = ""
    if path.exists():
        previous = path.read_text()
        if FINDINGS_HEADING in previous:
            findings = "\n" + previous[previous.index(FINDINGS_HEADING):]
    path.write_text(table + findings)


def replace_section(path: Path, section: str, before: str | None = None) -> None:
    """Put a `## ...` section into a markdown file, replacing the one with the same heading
    (a new one goes before the heading `before` when there is one, else at the end)."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else ""
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[nxt + 1:] if nxt >= 0 else "")
    elif before and before in text:
        at = text.index(before)
        text = text[:at] + section + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
