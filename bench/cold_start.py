"""Cold start: wall time of the installed `microfedi --help`, median of many runs.

Timed with hyperfine when it is installed (`apt-get install hyperfine`), else
with subprocess and a monotonic clock here. The bare interpreter (`python -c
pass`) is timed the same way, as the floor no Python program can go below.
`python -X importtime` then shows which imports the start-up spends its time on.

    python bench/cold_start.py            # prints JSON
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import GOAL_COLD_START_S, console_script, machine_info, progress, run_script


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(seconds), 4),
        "mean_s": round(statistics.fmean(seconds), 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
    }


def time_with_hyperfine(hyperfine: str, commands: list[list[str]], runs: int, warmup: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="microfedi-bench-") as tmp:
        export = Path(tmp) / "hyperfine.json"
        # --shell=none: no shell start-up in the figure; quoting is safe as no argument has spaces.
        subprocess.run(
            [hyperfine, "--shell=none", "--style=none", f"--warmup={warmup}", f"--runs={runs}",
             f"--export-json={export}", *(" ".join(command) for command in commands)],
            check=True, capture_output=True,
        )
        results = json.loads(export.read_text())["results"]
    return [_summary(result["times"]) for result in results]


def time_with_subprocess(commands: list[list[str]], runs: int, warmup: int) -> list[dict[str, float]]:
    summaries = []
    for command in commands:
        times = []
        for attempt in range(warmup + runs):
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            if attempt >= warmup:
                times.append(time.perf_counter() - start)
        summaries.append(_summary(times))
    return summaries


def import_profile(command: list[str], top: int = 10) -> dict[str, list[dict[str, object]]]:
    """The slowest imports of one start, from `python -X importtime`, in milliseconds.

    `cumulative` ranks the modules imported at start-up (depth 0: site, the
    console script's module) and those they import directly (depth 1), each with
    everything it pulls in; `self` ranks single modules by their own time.
    """
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append({"module": name.strip(), "depth": depth, "self_ms": int(self_us) / 1000, "cumulative_ms": int(cumulative_us) / 1000})

    def ranked(candidates: list[dict[str, object]], key: str) -> list[dict[str, object]]:
        chosen = sorted(candidates, key=lambda row: row[key], reverse=True)[:top]  # type: ignore[arg-type, return-value]
        return [{"module": row["module"], "depth": row["depth"], key: round(row[key], 1)} for row in chosen]  # type: ignore[arg-type]

    return {
        "cumulative": ranked([row for row in rows if row["depth"] <= 1], "cumulative_ms"),
        "self": ranked(rows, "self_ms"),
    }


def run(runs: int = 20, warmup: int = 3) -> dict[str, object]:
    """Time `microfedi --help` and the bare interpreter; profile imports."""
    script = console_script()
    help_command = [str(script), "--help"]
    commands = [help_command, [sys.executable, "-c", "pass"]]
    hyperfine = shutil.which("hyperfine")
    progress(f"cold start: {runs} runs of `{script} --help` with {'hyperfine' if hyperfine else 'subprocess timing'}")
    if hyperfine:
        microfedi_help, interpreter = time_with_hyperfine(hyperfine, commands, runs, warmup)
    else:
        microfedi_help, interpreter = time_with_subprocess(commands, runs, warmup)
    return {
        "command": " ".join(help_command),
        "timer": "hyperfine --shell=none" if hyperfine else "subprocess + time.perf_counter",
        "runs": runs,
        "microfedi_help": microfedi_help,
        "python_c_pass": interpreter,
        "goal_median_s": GOAL_COLD_START_S,
        "goal_met": microfedi_help["median_s"] <= GOAL_COLD_START_S,
        "importtime_ms": import_profile([str(script), "--help"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps({"machine": machine_info(), "cold_start": run(args.runs)}, indent=2))


if __name__ == "__main__":
    run_script(main)
