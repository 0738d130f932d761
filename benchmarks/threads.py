"""The default thread count, before and after issue 34 (1-minute load average -> cores busy now).

Three cases, each a `repaint inpaint` of the bundled examples with the fast preset and no --threads:
  idle      one run;
  after     two runs in a row (what a shell loop does): the second run's threads and wall time;
  beside    one run beside one busy process (a bounded busy loop, killed at the end).
Each run prints PyTorch's thread count at exit. ``--before DIR`` names a checkout of the code before
the change (e.g. ``git archive 0de9447 | tar -x -C /tmp/before``); the current tree is "after".

    python benchmarks/threads.py --before /tmp/before --out benchmarks/threads.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ("import atexit, sys, torch\n"
       "atexit.register(lambda: print('THREADS', torch.get_num_threads(), file=sys.stderr))\n"
       "from repaint_cli.cli.app import main\n"
       "sys.argv = ['repaint'] + sys.argv[1:]\n"
       "main()\n")
BUSY = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def run_once(code_root: Path, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(code_root)
    cmd = [sys.executable, "-c", RUN, "inpaint", str(ROOT / "examples"), "--mask", "thick", "--preset", "fast",
           "--out", str(out), "--overwrite"]
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)  # not ROOT: -c puts the cwd first on sys.path
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    threads = int(next(line.split()[1] for line in r.stderr.splitlines() if line.startswith("THREADS")))
    why = next((m.group(1) for m in map(re.compile(r"\d+ threads? \((.*)\)$").search, r.stderr.splitlines()) if m),
               "not said (before the change)")
    return {"threads": threads, "wall_s": round(wall, 1), "load1_at_start": round(load, 2), "why": why}


def case(code_root: Path, name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o"
        if name == "idle":
            return run_once(code_root, out)
        if name == "after":
            first = run_once(code_root, out)
            second = run_once(code_root, out)
            return {"first": first, "second": second}
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            time.sleep(1.0)
            return run_once(code_root, out)
        finally:
            busy.kill()
            busy.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a checkout of the code before the change")
    ap.add_argument("--cases", default="idle,after,beside")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "threads.json")
    a = ap.parse_args()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": len(os.sched_getaffinity(0)),
              "note": "a shared machine: other sessions' work shows in load1_at_start", "cases": {}}
    for name in a.cases.split(","):
        for label, root in (("before", a.before), ("after", ROOT)):
            result["cases"][f"{name}/{label}"] = r = case(root, name)
            print(name, label, json.dumps(r), flush=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
