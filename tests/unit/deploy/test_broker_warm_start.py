"""deploy.broker.warm_start without a JVM: directory ids as Kafka makes them, meta.properties as
the storage tool writes it, and a template made once and then reused."""
from __future__ import annotations

from pathlib import Path

from deploy.broker import warm_start
from deploy.broker.distribution import Distribution
from deploy.broker.process import BrokerFiles


def test_directory_ids_are_22_url_safe_characters_never_starting_with_a_dash():
    ids = [warm_start.new_directory_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


def test_the_template_is_made_once_and_a_new_cluster_reads_its_ids(tmp_path):
    dist = Distribution("0.0.0", tmp_path / "kafka")
    made: list[Path] = []

    def tool(work: Path) -> Path:
        made.append(work)
        (work / "cp").write_bytes(b"\x00checkpoint")
        return work / "cp"
    first = warm_start.ensure_template(dist, tool)
    again = warm_start.ensure_template(dist, tool)
    assert first == again and len(made) == 1 and not made[0].exists()
    assert sorted(p.name for p in dist.home.iterdir()) == [warm_start.TEMPLATE]
    files = BrokerFiles(tmp_path / "run")
    warm_start.format_from_template(first, files.data_dir, "CpIIUb9haTX-stcip0GwFg", 1)
    assert files.cluster_id() == "CpIIUb9haTX-stcip0GwFg"
    assert (files.data_dir / warm_start.CHECKPOINT).read_bytes() == b"\x00checkpoint"
    assert sorted(p.name for p in files.data_dir.iterdir()) == [warm_start.CHECKPOINT,
                                                                  "meta.properties"]


def test_the_class_archive_is_used_only_when_there_is_one(tmp_path):
    dist = Distribution("0.0.0", tmp_path)
    assert warm_start.archive_options(dist) == ()
    warm_start.archive_path(dist).write_bytes(b"x")
    assert warm_start.archive_options(dist) == (f"-XX:SharedArchiveFile={tmp_path}/broker.jsa",)
