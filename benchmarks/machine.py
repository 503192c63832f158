"""What every benchmark result records about the machine it was measured on."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from ssb.models import cpu_record


def machine_info() -> dict:
    cpu = cpu_record()  # the CPU as every run folder's manifest records it
    versions = {}
    for package in ("torch", "transformers", "peft", "openvino", "openvino-genai", "vllm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu["model"] or platform.processor(), "cores": os.cpu_count(), "cpu_flags": cpu["kernel_flags"],
            "python": platform.python_version(), "packages": versions}
