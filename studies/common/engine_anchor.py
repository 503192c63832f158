"""This machine's engine anchor (the base model graded by its engine; ``engine_anchors`` in ``ssb.stats.analysis_plan``).

    python3 studies/common/engine_anchor.py name
        prints base-<matrix unit> for this CPU: base-amx, base-avx512bf16, base-avx2 (base-cpu without AVX2)
    python3 studies/common/engine_anchor.py check FOLDER
        exits 0 if every summary in FOLDER (an exported arm) records this CPU's kernel flags, else 1, saying which differ:
        an anchor graded on another engine cannot anchor this one's arms
    python3 studies/common/engine_anchor.py committed [--needs BENCHMARK,...] RESULTS...
        prints each committed anchor of this CPU's name (RESULTS/base-<unit>) after checking it and that it graded each
        benchmark it needs; exits 1 if one fails (an anchor without a benchmark cannot anchor that benchmark's arms)
    python3 studies/common/engine_anchor.py --kernel-flags FLAG,... name|check|committed ...
        the same for a CPU with these kernel flags (as ``ssb.models.cpu_record`` lists them) instead of this one

The name is the unit that decides the engine's bf16 kernels; two CPUs of one unit with other kernel flags are told
apart by ``check``, which the study drivers run before reusing a committed anchor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

UNITS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx2", "avx2"))


def name(flags: list[str]) -> str:
    return "base-" + next((short for flag, short in UNITS if flag in flags), "cpu")


def check(folder: Path, flags: list[str]) -> bool:
    summaries = sorted(folder.glob("*.summary.json"))
    if not summaries:
        print(f"{folder}: no evaluation summary to check", file=sys.stderr)
        return False
    for path in summaries:
        recorded = (json.loads(path.read_text()).get("engine", {}).get("cpu") or {}).get("kernel_flags")
        if recorded != flags:
            print(f"{path}: graded on kernel flags {recorded}, this CPU has {flags}: it cannot anchor this engine's arms, "
                  "and its name is taken; stopping (an anchor of another name, graded by hand and appended to the plan's "
                  "engine_anchors, would)", file=sys.stderr)
            return False
    return True


def main(argv: list[str]) -> int:
    if argv in (["--help"], ["-h"]):
        print(__doc__)
        return 0
    if argv[:1] == ["--kernel-flags"] and len(argv) >= 2:
        flags, argv = [flag for flag in argv[1].split(",") if flag], argv[2:]
    else:
        from ssb.models import cpu_record  # imports torch (a second or two), which given flags do without

        flags = cpu_record()["kernel_flags"]
    if argv[:1] == ["name"] and len(argv) == 1:
        print(name(flags))
        return 0
    if argv[:1] == ["check"] and len(argv) == 2:
        return 0 if check(Path(argv[1]), flags) else 1
    if argv[:1] == ["committed"]:
        needs, folders = [], argv[1:]
        if folders[:1] == ["--needs"] and len(folders) >= 2:
            needs, folders = [b for b in folders[1].split(",") if b], folders[2:]
        for folder in (Path(results) / name(flags) for results in folders):
            if not folder.is_dir():
                continue
            missing = [b for b in needs if not (folder / f"{b}.summary.json").is_file()]
            if missing:
                print(f"{folder}: no {', '.join(missing)} evaluation: it cannot anchor those arms, and its name is taken; "
                      "grade the base model on them into that folder first", file=sys.stderr)
                return 1
            if not check(folder, flags):
                return 1
            print(folder)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
