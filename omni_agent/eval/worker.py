"""The worker process: ``python -m omni_agent.eval.worker JOB.json RESULT.json``.

Runs one attempt of one episode (:func:`omni_agent.eval.episode.run_episode`) and writes its
result atomically. The runner starts one per attempt, so a crash, a leak or a hang in one
episode cannot touch another; a worker that dies leaves no result file, which is how the runner
tells a dead worker from a finished one. SIGTERM ends the episode through its cleanup.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m omni_agent.eval.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    job_path, result_path = Path(args[0]), Path(args[1])
    signal.signal(signal.SIGTERM, _terminate)
    from .episode import EpisodeJob, run_episode

    job = EpisodeJob.model_validate_json(job_path.read_text(encoding="utf-8"))
    try:
        result = run_episode(job)
    except Exception as exc:  # a harness bug: report it as an infrastructure error, with the trace
        traceback.print_exc()
        from .results import EpisodeResult

        result = EpisodeResult.worker_failure(job, f"worker error: {type(exc).__name__}: {exc}")
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
