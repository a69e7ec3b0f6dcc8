"""Workers starting together all sync the same mapping index file: none may fail, none may
lose names (a CI run once saw `os.replace` of a shared temp file fail under two workers)."""
from __future__ import annotations

import multiprocessing as mp

from features import mapping_index
from features.config import parse_config


def _sync(path: str, barrier) -> str:
    cfg = parse_config({"mapping_index": path}, env={})
    barrier.wait()
    return mapping_index.sync(cfg).to_json()


def test_concurrent_syncs_agree_and_none_fails(tmp_path):
    path = str(tmp_path / "mapping_index.json")
    ctx = mp.get_context("fork")
    n = 8
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            results = pool.starmap(_sync, [(path, barrier)] * n)
    expected = mapping_index.sync(parse_config({"mapping_index": path}, env={})).to_json()
    assert set(results) == {expected}
    assert not list(tmp_path.glob("*.tmp"))
