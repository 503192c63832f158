"""The OpenVINO export cache: a hit marks its last use, and pruning removes the least recently used
exports (never the one in use) until the rest fit the limit; concurrent exports of one key export once,
and no half-written or half-removed folder is ever served. The exporter itself is faked."""

import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssb.config import load_config
from ssb.generation import openvino_export
from ssb.generation.openvino import OpenVINOBackend
from ssb.generation.openvino_export import (
    EXPORT_FILES,
    EXPORT_RECORD,
    cache_limit_bytes,
    export_is_complete,
    export_key,
    export_openvino,
    prune_exports,
)

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
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["b", "c"]  # beside their lock files
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
    (target / EXPORT_RECORD).write_text("{}")  # an export recorded before records listed their files
    os.utime(target, (NOW, NOW))
    monkeypatch.setattr(openvino_export, "exporter_python", lambda cache_dir: pytest.fail("a hit must not export"))
    assert export_openvino(model, tmp_path / "cache", "int8") == target
    assert target.stat().st_mtime > NOW


def test_cache_limit_reads_gib_and_rejects_nonsense(monkeypatch):
    monkeypatch.delenv("SSB_OPENVINO_CACHE_GB", raising=False)
    assert cache_limit_bytes() == 20 * 2**30
    monkeypatch.setenv("SSB_OPENVINO_CACHE_GB", "1.5")
    assert cache_limit_bytes() == int(1.5 * 2**30)
    for bad, message in (("lots", "not a number"), ("0", "must be > 0"), ("-1", "must be > 0"), ("inf", "must be a finite number")):
        monkeypatch.setenv("SSB_OPENVINO_CACHE_GB", bad)
        with pytest.raises(ValueError, match=message):
            cache_limit_bytes()


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e400", "1e308"])
def test_a_cache_limit_that_is_no_finite_size_stops_before_exporting(tmp_path, monkeypatch, value):
    """1e308 GiB is finite but its bytes are not: every such value is one line naming the variable, before minutes of exporting."""
    monkeypatch.setenv("SSB_OPENVINO_CACHE_GB", value)
    exporter = FakeExporter(monkeypatch)
    with pytest.raises(ValueError, match=r"^SSB_OPENVINO_CACHE_GB='[^']*': must be a finite number of GiB[^\n]*$"):
        export_openvino(tiny_model(tmp_path / "model"), tmp_path / "cache", "int8")
    assert exporter.runs == 0


def tiny_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


class FakeExporter:
    """Stands in for ``optimum-cli export openvino``: writes an IR folder's files, counting its runs; ``hold``
    keeps a run waiting with its files half written until released."""

    def __init__(self, monkeypatch, hold: bool = False, fail: bool = False):
        self.runs, self.fail = 0, fail
        self.started, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        monkeypatch.setattr(openvino_export, "exporter_python", lambda cache_dir: Path(sys.executable))
        monkeypatch.setattr(openvino_export, "_run", self)

    def __call__(self, command, what, log=None):
        self.runs += 1
        ir = Path(command[command.index("--weight-format") + 2])
        ir.mkdir(parents=True)
        (ir / "openvino_model.xml").write_text("<net/>")
        self.started.set()
        assert self.release.wait(30)
        if self.fail:
            raise openvino_export.ExportError(f"{what} failed (exit 1)")
        (ir / "openvino_model.bin").write_bytes(b"ir" * 100)
        (ir / "openvino_tokenizer.xml").write_text("<tokenizer/>")
        (ir / "config.json").write_text("{}")


def test_concurrent_exports_of_one_key_export_once_and_share_the_complete_folder(tmp_path, monkeypatch):
    model, cache = tiny_model(tmp_path / "model"), tmp_path / "cache"
    exporter = FakeExporter(monkeypatch, hold=True)
    results = []
    threads = [threading.Thread(target=lambda: results.append(export_openvino(model, cache, "int8"))) for _ in range(2)]
    threads[0].start()
    assert exporter.started.wait(30)
    threads[1].start()  # asks for the same key while the first is half way
    target = cache / "openvino" / export_key(model, None, "int8")
    assert not target.exists()  # nothing half-written is published
    exporter.release.set()
    for thread in threads:
        thread.join(30)
    assert exporter.runs == 1
    assert results == [target, target] and export_is_complete(target)
    record = json.loads((target / EXPORT_RECORD).read_text())
    assert record["files"] == {"config.json": 2, "openvino_model.bin": 200, "openvino_model.xml": 6, "openvino_tokenizer.xml": 12}
    assert [p.name for p in (cache / "openvino").iterdir() if p.is_dir()] == [target.name]  # no staging left


def test_a_failed_export_publishes_nothing_and_the_next_one_exports_again(tmp_path, monkeypatch):
    model, cache = tiny_model(tmp_path / "model"), tmp_path / "cache"
    FakeExporter(monkeypatch, fail=True)
    with pytest.raises(openvino_export.ExportError):
        export_openvino(model, cache, "int8")
    target = cache / "openvino" / export_key(model, None, "int8")
    assert not target.exists()
    exporter = FakeExporter(monkeypatch)
    assert export_openvino(model, cache, "int8") == target and exporter.runs == 1 and export_is_complete(target)


def test_an_export_missing_a_listed_file_is_exported_again(tmp_path, monkeypatch):
    """What an rmtree killed half way through leaves (the IR's two files still there, others gone) is no export."""
    model, cache = tiny_model(tmp_path / "model"), tmp_path / "cache"
    exporter = FakeExporter(monkeypatch)
    target = export_openvino(model, cache, "int8")
    (target / "openvino_tokenizer.xml").unlink()
    assert not export_is_complete(target)
    assert export_openvino(model, cache, "int8") == target and exporter.runs == 2 and export_is_complete(target)
    (target / "openvino_model.bin").write_bytes(b"torn")
    assert not export_is_complete(target)


def test_a_prune_killed_between_rename_and_delete_leaves_no_folder_that_passes_as_finished(tmp_path, monkeypatch):
    exports = tmp_path / "openvino"
    old, in_use = make_export(exports, "a", 300, NOW - 30), make_export(exports, "b", 300, NOW - 10)
    for folder in (old, in_use):
        (folder / EXPORT_RECORD).write_text(json.dumps({"files": {name: (folder / name).stat().st_size for name in EXPORT_FILES}}))
    assert export_is_complete(old)
    real_rmtree = openvino_export.shutil.rmtree

    def killed(path, ignore_errors=False):
        if ".removing-" in Path(path).name:
            (Path(path) / "openvino_model.bin").unlink()  # part of the way through
            raise KeyboardInterrupt
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(openvino_export.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        prune_exports(exports, keep=in_use, limit_bytes=400, now=NOW)
    assert not old.exists() and export_is_complete(in_use)
    assert [p for p in exports.iterdir() if p.is_dir() and not p.name.startswith(".")] == [in_use]
    monkeypatch.setattr(openvino_export.shutil, "rmtree", real_rmtree)
    prune_exports(exports, keep=in_use, limit_bytes=400, now=NOW)  # the next prune clears what the killed one left
    assert sorted(p.name for p in exports.iterdir() if p.is_dir()) == ["b"]


def test_prune_skips_an_export_another_process_is_using(tmp_path):
    exports = tmp_path / "openvino"
    busy, other, keep = make_export(exports, "a", 300, NOW - 30), make_export(exports, "b", 300, NOW - 20), make_export(exports, "c", 10, NOW)
    with openvino_export._entry_lock(exports, "a") as held:  # another holder: a second open of the lock file conflicts
        assert held
        assert prune_exports(exports, keep=keep, limit_bytes=400, now=NOW) == [other]
    assert busy.exists()


def test_users_of_one_export_do_not_wait_for_each_other(tmp_path, monkeypatch):
    model, cache = tiny_model(tmp_path / "model"), tmp_path / "cache"
    exporter = FakeExporter(monkeypatch)
    held = openvino_export.use_export(model, cache, "int8")
    results = []
    second = threading.Thread(target=lambda: results.append(openvino_export.use_export(model, cache, "int8")), daemon=True)
    second.start()
    second.join(10)  # a shared lock beside a shared lock
    assert [r.path for r in results] == [held.path] and exporter.runs == 1
    with openvino_export._entry_lock(cache / "openvino", held.path.name) as free:
        assert not free  # what a prune takes while either holds it
    held.release()
    results[0].release()
    with openvino_export._entry_lock(cache / "openvino", held.path.name) as free:
        assert free


def test_an_export_a_backend_uses_is_not_pruned_until_the_backend_is_closed(tmp_path, monkeypatch):
    """The backend compiles its IR after the export, and again after close(); a prune in between (another process's new
    export over the limit) must not remove it while the backend may still compile it."""
    compiled = []

    def compile_ir(model_dir, scheduler, device, properties):  # stands in for openvino_genai, which reads the IR here
        assert export_is_complete(Path(model_dir)), f"compiling {model_dir}, which the cache removed"
        compiled.append(Path(model_dir))
        return object()

    monkeypatch.setitem(sys.modules, "openvino_genai", SimpleNamespace(SchedulerConfig=SimpleNamespace, ContinuousBatchingPipeline=compile_ir))
    monkeypatch.setenv("SSB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSB_OPENVINO_CACHE_GB", str(400 / 2**30))  # room for one export (about 330 bytes each)
    exporter = FakeExporter(monkeypatch)
    config = load_config(None, {"model.name_or_path": str(tiny_model(tmp_path / "model"))})
    backend = OpenVINOBackend.from_config(config, chat=None)
    in_use, exports = backend.model_dir, tmp_path / "cache" / "openvino"
    os.utime(in_use, (NOW, NOW))  # the least recently used: the first a prune removes

    other = tiny_model(tmp_path / "other")
    (other / "model.safetensors").write_bytes(b"other weights")
    newer = export_openvino(other, tmp_path / "cache", "int8")  # its prune finds the cache over the limit
    assert in_use.exists() and export_is_complete(in_use)
    assert backend.pipeline is not None and compiled == [in_use]

    backend.close()  # the IR may go now
    assert prune_exports(exports, keep=newer, limit_bytes=cache_limit_bytes()) == [in_use]
    assert backend.pipeline is not None  # compiled again: held again, and exported again since it was removed
    assert compiled == [in_use, in_use] and exporter.runs == 3 and export_is_complete(in_use)
    assert prune_exports(exports, keep=newer, limit_bytes=cache_limit_bytes()) == []  # held again: not removed
    del backend  # garbage: the lock goes with it
    assert prune_exports(exports, keep=newer, limit_bytes=cache_limit_bytes()) == [in_use]


def _use_and_hold(model: Path, cache: Path, done, results) -> None:
    """One process: ask for the export, report how long that took, then use it until the test is done (10 s at most)."""
    start = time.monotonic()
    in_use = openvino_export.use_export(model, cache, "int8")
    results.put((time.monotonic() - start, export_is_complete(in_use.path)))
    done.wait(10)
    in_use.release()


def test_a_process_waiting_for_another_ones_export_waits_for_the_export_only(tmp_path, monkeypatch):
    """Two processes ask for one new key at once: one exports, the other waits for that export, not for the exporter's
    use of it afterwards (as long as its backend lives: minutes to hours; here 10 s)."""
    context = multiprocessing.get_context("fork")  # the children keep this test's fakes
    model, cache, runs = tiny_model(tmp_path / "model"), tmp_path / "cache", tmp_path / "runs"
    barrier, done, results = context.Barrier(2, timeout=10), context.Event(), context.Queue()
    real_is_complete, first_look = openvino_export.export_is_complete, []

    def is_complete(target):  # each process's first look: both find the export missing before either starts it
        complete = real_is_complete(target)
        if not first_look:
            first_look.append(target)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
        return complete

    def export(command, what, log=None):
        with open(runs, "a") as f:
            f.write("export\n")
        ir = Path(command[command.index("--weight-format") + 2])
        ir.mkdir(parents=True)
        for name in EXPORT_FILES:
            (ir / name).write_text("ir")

    monkeypatch.setattr(openvino_export, "exporter_python", lambda cache_dir: Path(sys.executable))
    monkeypatch.setattr(openvino_export, "_run", export)
    monkeypatch.setattr(openvino_export, "export_is_complete", is_complete)
    processes = [context.Process(target=_use_and_hold, args=(model, cache, done, results)) for _ in range(2)]
    for process in processes:
        process.start()
    try:
        answers = sorted(results.get(timeout=20) for _ in processes)
    finally:
        done.set()
        for process in processes:
            process.join(20)
    assert [complete for _, complete in answers] == [True, True]
    assert answers[-1][0] < 5, f"the second process waited {answers[-1][0]:.1f}s, for the first one's use of the export"
    assert runs.read_text() == "export\n"
