"""Helpers shared by the families of measurements: memory, machine, timing, fresh processes and
the results table."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RUNNER = "benchmarks.bench"
"""The module a fresh process runs (``python -m``), from :data:`REPO_ROOT`."""
REPO_ROOT = Path(__file__).resolve().parents[2]


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` would
    start a child process at its parent's peak (Linux carries it over through fork and exec),
    so a fresh benchmark process would report the parent's memory as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def in_alternation(runs: dict, rounds: int = 5) -> dict[str, float]:
    """Seconds each of ``runs`` (name: function) took in total, called in turn ``rounds`` times,
    so that a machine that gets busier or quieter meanwhile affects every variant alike."""
    seconds = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, function in runs.items():
            started = time.perf_counter()
            function()
            seconds[name] += time.perf_counter() - started
    return seconds


def in_fresh_process(option: str, *values: str, env: dict | None = None) -> dict:
    """Run the benchmark's runner (``python -m benchmarks.bench`` in the repository root) with
    ``--child-OPTION VALUES`` and return the JSON it prints last."""
    command = [sys.executable, "-m", RUNNER, f"--child-{option}", *values]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sample_batch(count: int = 8):
    """A reproducible batch of random slices: speed does not depend on the values."""
    import numpy as np

    from unetlib.labels import NUM_CLASSES, SLICE_SHAPE

    rng = np.random.default_rng(0)
    images = rng.normal(size=(count, *SLICE_SHAPE, 1)).astype(np.float32)
    return images, rng.integers(0, NUM_CLASSES, (count, *SLICE_SHAPE)).astype(np.uint8)


def _shown(value) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


class Table:
    """Rows of (measurement, value, unit), written as JSON and as a Markdown table."""

    def __init__(self):
        self.rows: list[tuple[str, float | str, str]] = []
        self.extra: dict = {}

    def add(self, name: str, value, unit: str = "") -> None:
        self.rows.append((name, value, unit))
        print(f"{name}: {_shown(value)} {unit}", flush=True)

    def write(self, out: Path, machine: str, name: str = "results") -> None:
        """Write ``out/NAME.json`` and ``out/NAME.md``, each atomically."""
        from unetlib.files import write_atomic

        out.mkdir(parents=True, exist_ok=True)
        write_atomic(
            out / f"{name}.json", json.dumps({"machine": machine, "rows": self.rows, **self.extra}, indent=2) + "\n"
        )
        lines = [f"Machine: {machine}", "", "| measurement | value | unit |", "| --- | ---: | --- |"]
        lines += [f"| {row} | {_shown(value)} | {unit} |" for row, value, unit in self.rows]
        write_atomic(out / f"{name}.md", "\n".join(lines) + "\n")
