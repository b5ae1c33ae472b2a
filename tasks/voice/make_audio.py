"""Make the spoken commands of the voice suite: one 16 kHz mono FLAC per task, with espeak-ng.

Each task file names its command in ``metadata``: ``transcript`` (the words),
``espeak_voice`` and ``words_per_minute`` (several voices and speeds across the suite) and
optionally ``noise_amplitude`` (white noise mixed in with sox, for the noisy tasks). The FLAC
files are committed (about 25 kB each) so the suite runs without espeak-ng; run this again after
editing a task (``--check`` only reports files that are missing or out of date):

    python tasks/voice/make_audio.py [--check]

Needs the apt packages espeak-ng and sox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RATE = 16_000
LEAD_SILENCE_S = 0.3
"""Silence before and after the command, as a microphone take would have."""


def _spec(task: dict) -> dict:
    meta = task.get("metadata", {})
    return {
        "transcript": meta["transcript"],
        "voice": meta.get("espeak_voice", "en-us"),
        "wpm": int(meta.get("words_per_minute", 165)),
        "noise": float(meta.get("noise_amplitude", 0.0)),
    }


def _digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def synthesize(spec: dict, target: Path) -> None:
    """espeak-ng -> pad with silence, 16 kHz mono -> (noise mixed in) -> FLAC."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, clean = Path(tmp) / "raw.wav", Path(tmp) / "clean.wav"
        subprocess.run(["espeak-ng", "-v", spec["voice"], "-s", str(spec["wpm"]), "-w", str(raw), spec["transcript"]],
                       check=True, timeout=60)  # fmt: skip
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(clean),
                        "pad", str(LEAD_SILENCE_S), str(LEAD_SILENCE_S)], check=True, timeout=60)  # fmt: skip
        if spec["noise"] > 0:
            noise = Path(tmp) / "noise.wav"
            seconds = float(subprocess.run(["soxi", "-D", str(clean)], capture_output=True, text=True, check=True).stdout)
            subprocess.run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(noise), "synth", f"{seconds}",
                            "whitenoise", "vol", str(spec["noise"])], check=True, timeout=60)  # fmt: skip
            subprocess.run(["sox", "-m", str(clean), str(noise), "-C", "8", str(target)], check=True, timeout=60)
        else:
            subprocess.run(["sox", str(clean), "-C", "8", str(target)], check=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report missing or stale audio; write nothing")
    args = parser.parse_args(argv)
    manifest_path = HERE / "audio" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    stale = []
    for task_file in sorted(HERE.glob("*.yaml")):
        task = yaml.safe_load(task_file.read_text())
        audio = HERE / task["instruction"]["audio"]
        spec = _spec(task)
        if audio.is_file() and manifest.get(audio.name) == _digest(spec):
            continue
        stale.append(audio.name)
        if not args.check:
            audio.parent.mkdir(parents=True, exist_ok=True)
            synthesize(spec, audio)
            manifest[audio.name] = _digest(spec)
            print(f"wrote {audio.relative_to(HERE)}: {spec['transcript']!r} ({spec['voice']}, {spec['wpm']} wpm)")
    if args.check:
        print("\n".join(f"stale or missing: {name}" for name in stale) or "all audio is up to date")
        return 1 if stale else 0
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
