"""One benchmark arm per process, so that each arm's peak RSS is its own: the script runs itself with ``--worker``."""

from __future__ import annotations

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
