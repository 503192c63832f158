"""Which backend, torch dtype and OpenVINO precision ``auto`` picks, and what an OpenVINO export is keyed by."""

import pytest
import torch

import ssb.generation as generation
import ssb.models as models
from ssb.config import ModelConfig, load_config
from ssb.generation.openvino import precision_choice
from ssb.generation.openvino_export import export_key
from ssb.runfolder.folder import model_provenance

AMD_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMD_ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
XEON_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"


def test_cpu_bf16_unit_reads_the_flags():
    assert models.cpu_bf16_unit(AMD_AVX2) is None
    assert models.cpu_bf16_unit(AMD_ZEN4) == "avx512_bf16"
    assert models.cpu_bf16_unit(XEON_AMX) == "amx_bf16"
    assert models.cpu_bf16_unit("no flags line") is None


def test_cpu_record_keeps_the_model_and_the_kernel_deciding_flags_only():
    xeon = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 aes avx2 fma avx512f avx512_bf16 amx_bf16 avx_vnni\n"
    assert models.cpu_record(xeon) == {"model": "Intel(R) Xeon(R) Processor",
                                       "kernel_flags": ["amx_bf16", "avx2", "avx512_bf16", "avx512f", "avx_vnni", "fma"]}
    assert models.cpu_record("no cpuinfo here") == {"model": None, "kernel_flags": []}


def test_every_manifest_entry_records_the_machine_it_was_computed_on(monkeypatch, tokenizer):
    read = models.cpu_flags
    monkeypatch.setattr(models, "cpu_flags", lambda cpuinfo=None: read(cpuinfo if cpuinfo is not None else AMD_ZEN4))
    recorded = model_provenance(load_config(None, {"model.device": "cpu"}), tokenizer)
    assert recorded["device"] == "cpu"
    assert recorded["cpu"] == {"model": None, "kernel_flags": ["avx2", "avx512_bf16", "avx512_vnni", "avx512f"]}


@pytest.mark.parametrize("cpuinfo, expected", [(AMD_AVX2, torch.float32), (AMD_ZEN4, torch.bfloat16), (XEON_AMX, torch.bfloat16)])
def test_auto_dtype_on_cpu_follows_the_bf16_units(monkeypatch, cpuinfo, expected):
    read_flags = models.cpu_bf16_unit
    monkeypatch.setattr(models, "cpu_bf16_unit", lambda: read_flags(cpuinfo))
    dtype, why = models.dtype_choice(ModelConfig(dtype="auto"), torch.device("cpu"))
    assert dtype == expected
    assert ("no bf16 matrix units" in why) == (expected == torch.float32)


def test_explicit_dtype_and_gpu():
    assert models.dtype_choice(ModelConfig(dtype="float32"), torch.device("cpu")) == (torch.float32, "set by model.dtype")
    assert models.dtype_choice(ModelConfig(dtype="auto"), torch.device("cuda"))[0] == torch.bfloat16


@pytest.mark.parametrize("cpuinfo, expected, why", [(AMD_AVX2, "f32", "no bf16 units"), (AMD_ZEN4, "f32", "avx512_bf16"),
                                                     (XEON_AMX, "f32", "amx_bf16")])
def test_auto_openvino_precision_is_the_measured_one_on_each_cpu_class_and_is_recorded_resolved(monkeypatch, tokenizer, cpuinfo, expected, why):
    read_flags = models.cpu_bf16_unit
    monkeypatch.setattr(models, "cpu_bf16_unit", lambda: read_flags(cpuinfo))
    assert precision_choice("auto")[0] == expected and why in precision_choice("auto")[1]
    config = load_config(None, {"backend.name": "openvino"})
    assert generation.backend_spec(config)["inference_precision"] == expected  # an evaluation's recorded model spec
    recorded = model_provenance(config, tokenizer)["generation_backend"]  # every other stage's manifest entry
    assert recorded == {"name": "openvino", "weight_format": "int8", "inference_precision": expected, "kv_cache_gb": 4,
                        "inference_precision_reason": precision_choice("auto")[1]}
    set_here = model_provenance(load_config(None, {"backend.name": "openvino", "backend.openvino.inference_precision": "bf16"}), tokenizer)
    assert set_here["generation_backend"]["inference_precision_reason"] == "set by backend.openvino.inference_precision"


@pytest.mark.parametrize("cpuinfo", [AMD_AVX2, XEON_AMX])
def test_explicit_openvino_precision_is_kept(monkeypatch, cpuinfo):
    read_flags = models.cpu_bf16_unit
    monkeypatch.setattr(models, "cpu_bf16_unit", lambda: read_flags(cpuinfo))
    assert precision_choice("bf16") == ("bf16", "set by backend.openvino.inference_precision")
    config = load_config(None, {"backend.name": "openvino", "backend.openvino.inference_precision": "bf16"})
    assert generation.backend_spec(config)["inference_precision"] == "bf16"


@pytest.mark.parametrize("device, installed, expected", [
    ("cpu", {"openvino_genai"}, "openvino"), ("cpu", set(), "hf"), ("cuda", {"vllm", "openvino_genai"}, "vllm"), ("cuda", {"openvino_genai"}, "hf"),
])
def test_auto_backend_by_device_and_what_is_installed(monkeypatch, device, installed, expected):
    monkeypatch.setattr(generation.importlib.util, "find_spec", lambda name: object() if name in installed else None)
    monkeypatch.setattr(models, "resolve_device", lambda config: torch.device(device))
    assert generation.backend_name(load_config(None, {})) == expected
    assert generation.backend_name(load_config(None, {"backend.name": "hf"})) == "hf"


def test_export_key_follows_weight_bytes_adapter_and_format(tmp_path):
    model, adapter = tmp_path / "model", tmp_path / "adapter"
    model.mkdir()
    adapter.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    base = export_key(model, None, "int8")
    assert base == export_key(model, None, "int8")
    assert len({base, export_key(model, adapter, "int8"), export_key(model, None, "fp32")}) == 3
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    for f in model.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert export_key(copy, None, "int8") == base  # keyed by content, not by path
    (model / "model.safetensors").write_bytes(b"retrained")
    assert export_key(model, None, "int8") != base


def test_prompts_are_held_to_the_engines_own_context_cap(tiny_model_dir):
    """The tiny model takes 4096 positions; vLLM allocated for fewer (backend.vllm.max_model_len) takes only those, so a
    prompt that fits the model but not the engine is dropped before it is sent."""
    from ssb.generation import LazyBackend

    def lazy(**overrides):
        return LazyBackend(load_config(None, {"model.name_or_path": str(tiny_model_dir), **overrides}))

    assert lazy(**{"backend.name": "hf"}).context_length == 4096
    assert lazy(**{"backend.name": "vllm"}).context_length == 4096
    assert lazy(**{"backend.name": "vllm", "backend.vllm.max_model_len": 512}).context_length == 512
    assert lazy(**{"backend.name": "hf", "backend.vllm.max_model_len": 512}).context_length == 4096  # another engine's setting


def test_seeds_derive_from_the_run_seed_and_their_keys_alone():
    """One derivation for per-chunk and per-request seeds, pinned to its formula (changing it would change every run's samples)."""
    import hashlib

    from ssb.generation import derive_seed

    def formula(text: str) -> int:
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF

    assert derive_seed(7, "rollouts", 3) == formula("7:rollouts:3")
    assert derive_seed(7, 2) == formula("7:2")
    assert derive_seed(7, "rollouts", 3) != derive_seed(7, "rollouts", 4) != derive_seed(8, "rollouts", 4)
