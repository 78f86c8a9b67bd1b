"""Command-line start-up: `cnnlab --help` against `python -c "import torch"`, on this machine.

Each is run as a fresh process (`python -m cnnlab --help`, the interpreter and every import
included) once to warm the file cache, then timed `--runs` times; the best time of each is
kept, as the least disturbed by neighbours on shared cores. The command line lists its commands
without importing them or torch, so it should start faster than torch alone imports.
Targets: `cnnlab --help` under 1 s, and faster than `import torch` (ratio >= 1).

Usage: python bench/cli_startup.py [--runs 5] [--strict]
The last line printed is a JSON summary (targets, results, provenance).
"""

from __future__ import annotations

import subprocess
import sys
import time

from common import (
    REPO_ROOT,
    Target,
    argument_parser,
    print_summary,
    print_table,
    provenance,
    run_main,
    wait_for_quiet_machine,
)

SIDES = {
    "cnnlab --help": [sys.executable, "-m", "cnnlab", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def best_time(command: list[str], runs: int) -> float:
    """The shortest wall time of `runs` runs of `command`, in seconds, after one warm-up run."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side")
    args = parser.parse_args()
    wait_for_quiet_machine(max_load=3.0, timeout=60)
    best = {side: best_time(command, args.runs) for side, command in SIDES.items()}
    help_time, torch_time = best.values()
    print_table(f"start-up, best of {args.runs} runs", ["command", "best s"], list(best.items()))
    targets = [
        Target.at_most("cnnlab --help", help_time, 1.0, "s"),
        Target.at_least(
            "import torch time over cnnlab --help time",
            torch_time / help_time,
            1.0,
            note=f"import torch {torch_time:.3g}s",
        ),
    ]
    results = {"best_s": best, "runs": args.runs}
    print_summary("cli_startup", targets, results, provenance({}))


if __name__ == "__main__":
    run_main(main)
