"""Evaluation-harness overhead: what a suite costs beyond the model and the tools.

Runs N trivial episodes (the scripted policy answers at once; no tools, so no model time and no
tool work) through the real runner: a fresh worker process per episode (forked from the warm
fork server, :mod:`omni_agent.eval.forkserver`), workspace setup, the agent loop with its
trajectory, the checks, the result line, and the report. Prints the per-episode overhead (median,
split into worker start-up / setup / agent loop / checks) and episodes per minute with 1 and 2
workers, then the same with 1 worker and a fresh Python per episode (``OMNI_EVAL_FORKSERVER=0``,
the way every episode started before the fork server), with the machine it ran on.

    .venv/bin/python evals/perf/bench_eval_harness.py [--episodes 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from omni_agent.eval.results import machine_info, read_results
from omni_agent.eval.runner import run_suite
from omni_agent.eval.task import Task


def trivial_tasks(n: int) -> list[Task]:
    return [
        Task.model_validate({
            "id": f"trivial-{i:03d}", "category": "bench", "instruction": "Say ok.",
            "reference": [{"answer": "ok"}], "checks": [{"type": "answer", "equals": "ok"}],
            "setup": {"files": {"note.txt": "x"}},
        })  # fmt: skip
        for i in range(n)
    ]


def run(n: int, workers: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_suite(trivial_tasks(n), model="reference", out=Path(tmp) / "run", workers=workers, progress=False)
        wall = time.perf_counter() - t0
        assert summary.passed == n, summary
        return wall, read_results(Path(tmp) / "run" / "results.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=12)
    args = ap.parse_args()
    m = machine_info()
    print(f"machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}")
    run(2, 1)  # warm the file cache
    for workers, mode in ((1, "warm"), (2, "warm"), (1, "cold")):
        os.environ["OMNI_EVAL_FORKSERVER"] = "0" if mode == "cold" else "1"
        wall, results = run(args.episodes, workers)
        med = lambda key: statistics.median(r.timings.get(key, 0.0) for r in results)  # noqa: E731
        total = statistics.median(r.total_seconds for r in results)
        print(
            f"{'fork server' if mode == 'warm' else 'fresh Python per episode'}, workers={workers}: {args.episodes} episodes in {wall:.2f} s -> {args.episodes / wall * 60:.1f} episodes/min; "
            f"per-episode harness overhead median {total * 1000:.0f} ms "
            f"(worker start-up {med('worker_overhead') * 1000:.0f} ms, setup {med('setup') * 1000:.0f} ms, "
            f"agent loop {med('agent') * 1000:.0f} ms, checks {med('checks') * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
