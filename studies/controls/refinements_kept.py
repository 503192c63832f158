"""How many refinements a run folder's refine stage kept (``refine.kept`` in its stats.json).

    python studies/controls/refinements_kept.py RUN_DIR

controls.sh trains and evaluates the random-hint control only when this is above 0: with nothing kept there is nothing
to distil, and the control is reported as such. Prints the number alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    args = parser.parse_args()
    print(json.loads((args.run_dir / "stats.json").read_text())["refine"]["kept"])


if __name__ == "__main__":
    main()
