"""What verifying a run folder's recorded outputs costs: the size and sha256 of every file its stages recorded, per stage.

Every finished stage records its outputs' digests, and they are checked whenever a later stage reads them or a skip
relies on them (``ssb.runfolder.folder.RunFolder.verify``): this times one such check of every stage of a run folder (the
page cache warm, as it is right after the stage that wrote them), and the whole folder's total.

    python benchmarks/output_digests.py runs/demo [--out benchmarks/results/output_digests.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from machine import machine_info
from ssb.runfolder.folder import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="also write the result here (JSON)")
    args = parser.parse_args()
    folder = RunFolder(args.run_dir)
    stages = folder.manifest()["stages"]
    rows, total_bytes, total_s = {}, 0, 0.0
    for name, entry in stages.items():
        recorded = [*entry.get("outputs", {}).values(), *entry.get("reads", {}).values()]
        start = time.monotonic()
        folder.verify(name)
        seconds = time.monotonic() - start
        size = sum(d["bytes"] for d in recorded)
        rows[name] = {"files": len(recorded), "bytes": size, "verify_s": round(seconds, 3)}
        total_bytes, total_s = total_bytes + size, total_s + seconds
    rate = round(total_bytes / 2**20 / total_s, 1) if total_s else None
    result = {"command": " ".join(["python benchmarks/output_digests.py", *sys.argv[1:]]), "machine": machine_info(), "stages": rows,
              "total": {"bytes": total_bytes, "verify_s": round(total_s, 3), "mb_per_s": rate}}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
