"""How fast the CLI answers when it has no image work to do, next to `import torch`.

    python benchmarks/startup.py --repeats 7

Each command runs in a fresh interpreter; the commands are interleaved round by round so
that background load hits them alike; the median wall time of each is printed as a
Markdown table (and the ratio to `import torch`).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPAINT = [sys.executable, "-m", "repaint_cli"]
COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "repaint --help": REPAINT + ["--help"],
    "repaint inpaint --help": REPAINT + ["inpaint", "--help"],
    "repaint masks list": REPAINT + ["masks", "list"],
    "repaint schedule --t-T 250 --jump-length 10 --jump-n-sample 10":
        REPAINT + ["schedule", "--t-T", "250", "--jump-length", "10", "--jump-n-sample", "10"],
    "repaint models list": REPAINT + ["models", "list"],
    "repaint inpaint x.png --precision fp8 (usage error)": REPAINT + ["inpaint", "x.png", "--precision", "fp8"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for name, cmd in COMMANDS.items():  # warm the file cache once
            subprocess.run(cmd, cwd=cwd, capture_output=True)
        for _ in range(args.repeats):
            for name, cmd in COMMANDS.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=cwd, capture_output=True)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times['python -c "import torch"'])
    print(f"| command | median s ({args.repeats} runs) | vs import torch |")
    print("|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| `{name}` | {m:.2f} | {m / base:.2f}x |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
