"""What every benchmark result records about the machine it was measured on.

    python benchmarks/machine.py        prints this machine's record (JSON)

The benchmarks import ``machine_info`` from here (a script's own folder is on its import path when it runs as a file);
a study script, in a folder of its own, runs this command instead.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Prints the record as JSON.").parse_args()
    print(json.dumps(machine_info(), indent=2))


if __name__ == "__main__":
    main()
