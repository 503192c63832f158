"""What every benchmark result records about the machine it was measured on."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

# The instruction-set flags that decide which kernels and precisions are fast on a CPU.
RELEVANT_FLAGS = re.compile(r"^(avx2|fma|avx512\w*|amx\w*|avx_vnni\w*)$")


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    versions = {}
    for package in ("torch", "transformers", "peft", "openvino", "openvino-genai", "vllm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": model.group(1).strip() if model else platform.processor(), "cores": os.cpu_count(),
            "cpu_flags": sorted(f for f in (flags.group(1).split() if flags else []) if RELEVANT_FLAGS.match(f)),
            "python": platform.python_version(), "packages": versions}
