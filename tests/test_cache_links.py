"""The cache (packaged models, GGUF conversions, OpenVINO exports and their exporter) is written without following a
link: a link where ssb writes is refused, naming it, or left alone, and what it points to is never changed. The model
loaders and the exporter are faked."""

import hashlib
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssb import packaged_models
from ssb.generation import openvino_export
from ssb.generation.openvino_export import EXPORT_FILES, export_key, prune_exports, use_export
from ssb.packaged_models import PackagedGGUF, assemble_gguf, convert_gguf
from ssb.runfolder.artifacts import RunFolderError
from ssb.runfolder.file_modes import umask_mode


def outside_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    return folder


def untouched(folder: Path) -> bool:
    return [p.name for p in folder.iterdir()] == ["mine.txt"] and (folder / "mine.txt").read_text() == "mine"


class FakeModel:
    """What ``convert_gguf`` needs of a transformers model or tokenizer: ``from_pretrained`` and ``save_pretrained``."""

    def __init__(self, files):
        self.files, self.hf_quantizer, self.config = files, object(), SimpleNamespace(quantization_config={})

    def save_pretrained(self, folder):
        for name in self.files:
            Path(folder, name).write_text("{}")


@pytest.fixture
def fake_transformers(monkeypatch):
    model = SimpleNamespace(from_pretrained=lambda *args, **kwargs: FakeModel(["config.json", "model.safetensors"]))
    tokenizer = SimpleNamespace(from_pretrained=lambda *args, **kwargs: FakeModel(["tokenizer.json"]))
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(float32="float32"))
    monkeypatch.setitem(sys.modules, "transformers", SimpleNamespace(AutoModelForCausalLM=model, AutoTokenizer=tokenizer))


def test_a_link_at_the_conversion_staging_name_is_not_written_through(tmp_path, fake_transformers):
    outside, cache = outside_folder(tmp_path), tmp_path / "cache"
    cache.mkdir()
    (cache / ".model.converting").symlink_to(outside)
    convert_gguf(tmp_path / "model.gguf", cache / "model")
    folder = cache / "model"
    assert untouched(outside)
    assert not folder.is_symlink() and sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert stat.S_IMODE(folder.stat().st_mode) == umask_mode(0o777)  # a cache another account may share
    assert (cache / ".model.converting").is_symlink()  # not ssb's to remove
    assert sorted(p.name for p in cache.iterdir()) == [".model.converting", "model"]  # its own staging is gone


def test_a_conversion_never_deletes_a_folder_it_did_not_create(tmp_path, fake_transformers):
    cache = tmp_path / "gguf"
    (cache / ".model.converting").mkdir(parents=True)
    (cache / ".model.converting" / "notes.txt").write_text("someone's")
    convert_gguf(tmp_path / "model.gguf", cache / "model")
    assert (cache / ".model.converting" / "notes.txt").read_text() == "someone's"
    assert (cache / "model" / "config.json").is_file()


@pytest.fixture
def packaged_tiny(tmp_path, monkeypatch):
    part = tmp_path / "part.bin"
    part.write_bytes(b"gguf bytes")
    spec = PackagedGGUF(parts=(("tiny_part", "part.bin"),), sha256=hashlib.sha256(b"gguf bytes").hexdigest(), size=10,
                        install="pip install tiny_part")
    monkeypatch.setitem(packaged_models.PACKAGED, "tiny", spec)
    monkeypatch.setattr(packaged_models, "_part_path", lambda package, relative: part)


def test_assembling_a_gguf_file_refuses_a_link_at_its_partial_file(tmp_path, packaged_tiny):
    cache, outside = tmp_path / "cache", tmp_path / "outside.txt"
    cache.mkdir()
    outside.write_text("mine")
    (cache / "tiny.gguf.partial").symlink_to(outside)
    with pytest.raises(RunFolderError, match=r"tiny\.gguf\.partial: a link"):
        assemble_gguf("tiny", cache)
    assert outside.read_text() == "mine" and not (cache / "tiny.gguf").exists()
    (cache / "tiny.gguf.partial").unlink()
    assert assemble_gguf("tiny", cache).read_bytes() == b"gguf bytes"  # without the link, assembled as before


def tiny_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture
def fake_exporter(monkeypatch):
    def export(command, what, log=None):
        ir = Path(command[command.index("--weight-format") + 2])
        ir.mkdir(parents=True)
        for name in EXPORT_FILES:
            (ir / name).write_text("ir")

    monkeypatch.setattr(openvino_export, "exporter_python", lambda cache_dir: Path(sys.executable))
    monkeypatch.setattr(openvino_export, "_run", export)


@pytest.mark.parametrize("name", [".{key}.lock", ".{key}.export-lock"])
def test_an_openvino_export_refuses_a_link_at_its_lock_files(tmp_path, fake_exporter, name):
    model, cache, outside = tiny_model(tmp_path / "model"), tmp_path / "cache", tmp_path / "outside.txt"
    exports = cache / "openvino"
    exports.mkdir(parents=True)
    link = exports / name.format(key=export_key(model, None, "int8"))
    link.symlink_to(outside)  # dangling: opening it with O_CREAT would create the outside file
    with pytest.raises(RunFolderError, match=rf"{link.name}: a link"):
        use_export(model, cache, "int8")
    assert not outside.exists()


def test_an_openvino_export_refuses_a_link_at_its_staging_folder(tmp_path, fake_exporter):
    model, cache, outside = tiny_model(tmp_path / "model"), tmp_path / "cache", outside_folder(tmp_path)
    exports = cache / "openvino"
    exports.mkdir(parents=True)
    link = exports / f".{export_key(model, None, 'int8')}.exporting"
    link.symlink_to(outside)
    with pytest.raises(RunFolderError, match=rf"{link.name}: a link"):
        use_export(model, cache, "int8")
    assert untouched(outside)


def test_a_prune_leaves_an_entry_whose_lock_is_a_link(tmp_path):
    exports, outside = tmp_path / "openvino", tmp_path / "outside.txt"
    for name in ("a", "b"):
        (exports / name).mkdir(parents=True)
        (exports / name / "openvino_model.bin").write_bytes(b"w" * 100)
    (exports / ".a.lock").symlink_to(outside)
    assert prune_exports(exports, keep=exports / "b", limit_bytes=10) == []
    assert (exports / "a").exists() and not outside.exists()


def test_the_exporter_environment_refuses_a_link_at_its_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SSB_OPENVINO_EXPORTER", raising=False)
    monkeypatch.setattr(openvino_export.subprocess, "run", lambda *args, **kwargs: pytest.fail("must not build through a link"))
    cache, outside = tmp_path / "cache", outside_folder(tmp_path)
    venv = openvino_export.exporter_venv(cache)
    venv.parent.mkdir(parents=True)
    venv.symlink_to(outside)
    with pytest.raises(RunFolderError, match=rf"{venv.name}: a link"):
        openvino_export.exporter_python(cache)
    assert untouched(outside)


def test_a_conversion_refuses_a_link_at_its_folder(tmp_path, fake_transformers):
    outside, cache = outside_folder(tmp_path), tmp_path / "cache"
    cache.mkdir()
    (cache / "model").symlink_to(outside)
    with pytest.raises(RunFolderError, match=r"model: a link"):
        convert_gguf(tmp_path / "model.gguf", cache / "model")
    assert untouched(outside) and [p.name for p in cache.iterdir()] == ["model"]


def test_a_conversion_another_process_finished_first_is_kept(tmp_path, fake_transformers):
    folder = tmp_path / "cache" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"theirs": true}')
    convert_gguf(tmp_path / "model.gguf", folder)
    assert (folder / "config.json").read_text() == '{"theirs": true}'
    assert [p.name for p in folder.parent.iterdir()] == ["model"]  # this process's staging is gone
