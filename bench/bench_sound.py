"""Stereo width and low end of generated tracks, as the stream plays them (render + effects).

Tracks come from the shipped checkpoint (seed 0, tracks 0..N-1, each whole: intro to outro);
each is rendered with FluidSynth and run through the stream's effects chain, once with the
default settings and once with the settings before issue 15 (narrow pans, no chorus, no low
shelf, no bass centring) side by side. Per track:
  correlation   L/R correlation (1 = mono)            goal 0.6 .. 0.9
  mono loss     (L+R)/2 against the stereo level, dB  goal ≥ -1.5 dB
  side          side (L-R)/2 against mid, dB
  < 60 Hz       energy below 60 Hz against the whole  goal ≤ -10 dB
  side < 120    side energy below 120 Hz against mid's there (bass and kick centred; crossover 150 Hz)
  bass          lowest and median note of the triangle
Run: .venv/bin/python bench/bench_sound.py [--tracks 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.composer import load_composer, whole_tracks  # noqa: E402
from streamer.config import Config, VoiceSettings  # noqa: E402
from streamer.measure import band_share_db, low_side_db, stereo_figures  # noqa: E402
from streamer.offline import render_pcm  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOALS = {"correlation": (0.6, 0.9), "mono_loss_db_min": -1.5, "below_60_hz_db_max": -10.0}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def before_issue_15() -> Config:
    """The sound as it was: pans -0.15 / +0.2, no chorus, 30 Hz high-pass only, full-width bass."""
    defaults = Config()
    render = dataclasses.replace(defaults.render, chorus_level=0.0,
                                 lead=VoiceSettings("pulse12", -0.15, 0.75), harmony=VoiceSettings("keys", 0.2, 0.6))
    effects = dataclasses.replace(defaults.effects, highpass_hz=30.0, low_shelf_db=0.0, mono_below_hz=0.0)
    return dataclasses.replace(defaults, render=render, effects=effects)


def note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def figures(pcm: np.ndarray, sample_rate: int) -> dict:
    stereo = stereo_figures(pcm)
    return {"correlation": round(stereo.correlation, 3), "mono_loss_db": round(stereo.mono_loss_db, 2),
            "side_db": round(stereo.side_db, 1), "below_60_hz_db": round(band_share_db(pcm, sample_rate), 1),
            "side_below_120_hz_db": round(low_side_db(pcm, sample_rate, 120.0), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8, help="generated tracks to measure (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="the composer's seed (default 0)")
    parser.add_argument("--json", type=Path, default=RESULTS / "sound.json")
    args = parser.parse_args()
    configs = {"now": Config(), "before": before_issue_15()}
    rows = []
    for number, bars in enumerate(whole_tracks(load_composer("", args.seed), args.tracks)):
        bass = [note.pitch for bar in bars for note in bar.notes if note.voice == "bass"]
        row = {"track_id": bars[0].track_id, "key": bars[0].key, "bars": len(bars),
               "seconds": round(sum(bar.seconds for bar in bars), 1),
               "bass_lowest": note_name(min(bass)), "bass_median": note_name(int(statistics.median(bass)))}
        for name, config in configs.items():
            pcm = render_pcm(bars, config, seed=args.seed + number)
            row[name] = figures(pcm, config.render.sample_rate)
        rows.append(row)
        print(f"{row['track_id']}: {row['key']:<9} {row['seconds']:>6.1f} s, bass {row['bass_lowest']}..median "
              f"{row['bass_median']}: " + "; ".join(
                  f"{name} corr {f['correlation']:.3f}, mono {f['mono_loss_db']:+.2f} dB, side {f['side_db']:+.1f} dB, "
                  f"<60 Hz {f['below_60_hz_db']:+.1f} dB, side <120 Hz {f['side_below_120_hz_db']:+.1f} dB"
                  for name, f in ((n, row[n]) for n in configs)), flush=True)
    now = [row["now"] for row in rows]
    summary = {name: {"correlation": [min(r[name]["correlation"] for r in rows),
                                      max(r[name]["correlation"] for r in rows)],
                      "mono_loss_db_min": min(r[name]["mono_loss_db"] for r in rows),
                      "below_60_hz_db_max": max(r[name]["below_60_hz_db"] for r in rows)} for name in configs}
    low, high = GOALS["correlation"]
    ok = (all(low <= f["correlation"] <= high for f in now) and all(f["mono_loss_db"] >= GOALS["mono_loss_db_min"]
                                                                    for f in now)
          and all(f["below_60_hz_db"] <= GOALS["below_60_hz_db_max"] for f in now))
    for name, figures_of in summary.items():
        print(f"{name:<7} correlation {figures_of['correlation'][0]:.3f} .. {figures_of['correlation'][1]:.3f} "
              f"(goal {low}..{high}); mono fold-down loss down to {figures_of['mono_loss_db_min']:+.2f} dB "
              f"(goal ≥ {GOALS['mono_loss_db_min']}); energy below 60 Hz at most "
              f"{figures_of['below_60_hz_db_max']:+.1f} dB (goal ≤ {GOALS['below_60_hz_db_max']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"figure": "stereo width and low end of generated tracks (render + effects)",
                                     "command": f"bench/bench_sound.py --tracks {args.tracks} --seed {args.seed}",
                                     "goals": GOALS, "summary": summary, "tracks": rows}, indent=2) + "\n")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
