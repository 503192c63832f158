"""The OpenVINO export cache: a hit marks its last use, and pruning removes the least recently used
exports (never the one in use) until the rest fit the limit."""

import os

import pytest

from ssb.generation import openvino_export
from ssb.generation.openvino_export import EXPORT_FILES, cache_limit_bytes, export_key, export_openvino, prune_exports

NOW = 1_000_000_000.0


def make_export(exports, name, size, last_used):
    folder = exports / name
    folder.mkdir(parents=True)
    (folder / "openvino_model.bin").write_bytes(b"w" * size)
    (folder / "openvino_model.xml").write_bytes(b"")
    os.utime(folder, (last_used, last_used))
    return folder


def test_prune_removes_least_recently_used_until_under_the_limit(tmp_path):
    oldest = make_export(tmp_path, "a", 300, NOW - 30)
    middle = make_export(tmp_path, "b", 300, NOW - 20)
    newest = make_export(tmp_path, "c", 300, NOW - 10)
    assert prune_exports(tmp_path, keep=newest, limit_bytes=650, now=NOW) == [oldest]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]
    assert prune_exports(tmp_path, keep=newest, limit_bytes=600, now=NOW) == []  # already fits
    assert middle.exists()


def test_prune_never_removes_the_export_in_use(tmp_path):
    in_use = make_export(tmp_path, "a", 500, NOW - 30)  # the oldest, and alone over the limit
    other = make_export(tmp_path, "b", 100, NOW - 10)
    assert prune_exports(tmp_path, keep=in_use, limit_bytes=200, now=NOW) == [other]
    assert in_use.exists()


def test_prune_removes_only_stale_staging_folders(tmp_path):
    stale, live = tmp_path / ".x.exporting", tmp_path / ".y.exporting"
    stale.mkdir()
    live.mkdir()
    os.utime(stale, (NOW - 2 * 24 * 3600, NOW - 2 * 24 * 3600))
    os.utime(live, (NOW - 60, NOW - 60))
    keep = make_export(tmp_path, "a", 10, NOW)
    assert prune_exports(tmp_path, keep=keep, limit_bytes=10**6, now=NOW) == [stale]
    assert live.exists() and keep.exists()


def test_a_cache_hit_marks_its_last_use_without_exporting(tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    target = tmp_path / "cache" / "openvino" / export_key(model, None, "int8")
    target.mkdir(parents=True)
    for name in EXPORT_FILES:
        (target / name).write_bytes(b"ir")
    os.utime(target, (NOW, NOW))
    monkeypatch.setattr(openvino_export, "exporter_python", lambda cache_dir: pytest.fail("a hit must not export"))
    assert export_openvino(model, tmp_path / "cache", "int8") == target
    assert target.stat().st_mtime > NOW


def test_cache_limit_reads_gib_and_rejects_nonsense(monkeypatch):
    monkeypatch.delenv("SSB_OPENVINO_CACHE_GB", raising=False)
    assert cache_limit_bytes() == 20 * 2**30
    monkeypatch.setenv("SSB_OPENVINO_CACHE_GB", "1.5")
    assert cache_limit_bytes() == int(1.5 * 2**30)
    for bad, message in (("lots", "not a number"), ("0", "must be > 0")):
        monkeypatch.setenv("SSB_OPENVINO_CACHE_GB", bad)
        with pytest.raises(ValueError, match=message):
            cache_limit_bytes()
