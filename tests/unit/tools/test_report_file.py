"""tools.bench.report_file: a bench run rewrites its part of BENCHMARKS.md and nothing else."""
from __future__ import annotations

from tools.bench.report_file import FINDINGS_HEADING, replace_section, write_table


def test_write_table_keeps_the_findings(tmp_path):
    f = tmp_path / "B.md"
    f.write_text(f"# old table\n\n{FINDINGS_HEADING}\n\nhand-written\n")
    write_table(f, "# new table\n")
    assert f.read_text() == f"# new table\n\n{FINDINGS_HEADING}\n\nhand-written\n"
    g = tmp_path / "new.md"
    write_table(g, "# only\n")
    assert g.read_text() == "# only\n"


def test_replace_section_replaces_inserts_before_or_appends(tmp_path):
    f = tmp_path / "B.md"
    f.write_text("# B\n\n## Jobs\nold\n\n## Other\nkept\n")
    replace_section(f, "## Jobs\nnew\n")
    assert f.read_text() == "# B\n\n## Jobs\nnew\n## Other\nkept\n"
    replace_section(f, "## Offline\nrows\n", before="## Other")
    assert f.read_text() == "# B\n\n## Jobs\nnew\n## Offline\nrows\n\n## Other\nkept\n"
    replace_section(f, "## Last\nend\n")
    assert f.read_text().endswith("kept\n\n## Last\nend\n")
