"""The bench scripts' verdicts: computed from the measured values, and `--strict` exits 1 on FAIL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

# A benchmark in miniature: the measured value comes from the command line, as a measurement would.
_SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
from common import Target, argument_parser, print_summary, run_main

def main():
    parser = argument_parser("a miniature benchmark")
    parser.add_argument("--measured", type=float, required=True)
    args = parser.parse_args()
    targets = [
        Target.at_least("speed-up", args.measured, 2.5),
        Target.not_measured("gpu speed-up", ">= 5x", "no GPU here"),
    ]
    print_summary("miniature", targets, {{}}, {{}})

run_main(main)
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "miniature.py"
    script.write_text(_SCRIPT.format(bench=str(BENCH)))
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("measured", "strict", "status", "verdict"),
    [
        ("0.68", True, 1, False),
        ("3.1", True, 0, True),  # a target not measured does not fail --strict
    ],
)
def test_verdicts_follow_the_measured_value_and_strict_fails_on_fail(
    tmp_path: Path, measured: str, strict: bool, status: int, verdict: bool
) -> None:
    result = _run(tmp_path, "--measured", measured, *(["--strict"] if strict else []))
    assert result.returncode == status, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    speed, gpu = summary["targets"]
    assert speed["measured"] == float(measured) and speed["pass"] is verdict
    assert gpu["measured"] is None and gpu["pass"] is None
    assert ("FAIL" in result.stdout) is (not verdict)
    assert "NOT MEASURED" in result.stdout and "PASS  gpu" not in result.stdout
