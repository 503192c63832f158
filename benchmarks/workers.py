"""One benchmark arm per process, so that each arm's peak RSS is its own: the script runs itself with ``--worker``.

    python benchmarks/workers.py SCRIPT ARM [ARGS...]     one arm of SCRIPT alone (grpo_sampling.py, onpolicy_step.py)

grpo_sampling.py and onpolicy_step.py import ``run_worker`` from here (a script's own folder is on its import path when
it runs as a file); the command runs one of their arms by itself, as they run each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def run_worker(script: str, arm: str, *args: str) -> dict:
    """``python SCRIPT --worker ARM ARGS...``'s result (the JSON of its ``RESULT`` line) with the load average after it;
    exits naming the arm and the worker's last output lines when it printed none."""
    print(f"== {arm}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, script, "--worker", arm, *args], capture_output=True, text=True,
                          env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{arm} failed (exit {done.returncode}):\n" + "\n".join((done.stdout + done.stderr).splitlines()[-30:]))
    result = {**json.loads(line[len("RESULT "):]), "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("script", help="a benchmark that runs its arms through run_worker")
    parser.add_argument("arm")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own options, passed on")
    args = parser.parse_args()
    run_worker(args.script, args.arm, *args.args)


if __name__ == "__main__":
    main()
