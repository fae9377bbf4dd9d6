"""Track archive: disk per track and the archive thread's cost of writing one.

Composes whole tracks with the shipped model (or --checkpoint DIR / rule-based), archives each
as the stream does (streamer.archive: MIDI + JSON, temp file + fsync + rename, then the bounds
check) into a temporary directory, and reports per track: MIDI and JSON bytes, CPU time of the
write (this thread) and its wall time (fsync included). From the sizes: how many tracks and
hours of music the default bounds (archive.keep_tracks, archive.keep_mb) hold.

Also the interpreter's heap across a full archive's life: keep_tracks + 10 % short tracks
written into one archive (so it fills and then prunes after every track), with the 56
now-playing rewrites a track's bars cause, the C heap in use (glibc mallinfo2) read after each
track: its change and the largest single step. Names built through pathlib used to step it, for
good, when the interned-string table doubled: 1.92 MB here, 3.75 MB in the daemon (issue 6).
Run: .venv/bin/python bench/bench_archive.py [--tracks N] [--checkpoint DIR|rule-based]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from bench_memory import heap_reader  # noqa: E402
from streamer.archive import NEXT_TRACK, PlayedTrack, TrackArchive  # noqa: E402
from streamer.composer import load_composer  # noqa: E402
from streamer.config import ArchiveSettings  # noqa: E402
from streamer.video import NowPlayingFile  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def compose_tracks(setting: str, count: int, seed: int) -> list[PlayedTrack]:
    composer = load_composer(setting, seed)
    tracks: list[PlayedTrack] = []
    bars = [composer.next_bar()]
    while len(tracks) < count:
        bar = composer.next_bar()
        if bar.track_id != bars[0].track_id:
            tracks.append(PlayedTrack(bars[0].track_id, composer.id, seed, tuple(bars), time.time(), 0.0, NEXT_TRACK))
            bars = []
        bars.append(bar)
    return tracks


def heap_across_a_full_archive(tracks: list[PlayedTrack], keep_tracks: int, bars_per_track: int = 56) -> dict | None:
    """The C heap in use before and after keep_tracks × 1.1 archived tracks, and its largest step."""
    heap = heap_reader()
    if heap is None:
        return None
    count = keep_tracks + keep_tracks // 10
    with tempfile.TemporaryDirectory() as directory:
        archive = TrackArchive(Path(directory) / "tracks", keep_tracks, 10**12)
        now_playing = NowPlayingFile(Path(directory) / "nowplaying.txt")
        before = last = heap()["heap_in_use_mb"]
        largest_step = 0.0
        for index in range(count):
            source = tracks[index % len(tracks)]
            # Two bars are enough: what is measured is the files' names, not the music.
            track = dataclasses.replace(source, track_id=f"s0-t{index:04d}", bars=source.bars[:2],
                                        started_at=1_700_000_000 + 60 * index)
            if archive.write(track) is None:
                raise RuntimeError(f"archive write failed: {archive.last_error}")
            for bar in range(bars_per_track):
                now_playing.write(f"{track.track_id} bar {bar}")
            now = heap()["heap_in_use_mb"]
            largest_step = max(largest_step, now - last)
            last = now
    return {"tracks_written": count, "kept": keep_tracks, "now_playing_writes": count * bars_per_track,
            "heap_in_use_mb_before": round(before, 2), "heap_in_use_mb_after": round(last, 2),
            "largest_step_mb": round(largest_step, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--checkpoint", default="", help="checkpoint directory; empty = the shipped one")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    tracks = compose_tracks(args.checkpoint, args.tracks, args.seed)
    defaults = ArchiveSettings()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        archive = TrackArchive(directory, defaults.keep_tracks, int(defaults.keep_mb * 1_000_000))
        for track in tracks:
            wall, cpu = time.perf_counter(), time.process_time()
            archive_id = archive.write(track)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert archive_id is not None, archive.last_error
            midi = (Path(directory) / f"{archive_id}.mid").stat().st_size
            record = (Path(directory) / f"{archive_id}.json").stat().st_size
            rows.append({"track_id": track.track_id, "bars": len(track.bars),
                         "seconds": round(track.duration_seconds, 1), "midi_bytes": midi, "json_bytes": record,
                         "write_cpu_ms": round(cpu * 1000, 2), "write_wall_ms": round(wall * 1000, 2)})

    per_track = statistics.mean(r["midi_bytes"] + r["json_bytes"] for r in rows)
    per_second = sum(r["midi_bytes"] + r["json_bytes"] for r in rows) / sum(r["seconds"] for r in rows)
    mean_seconds = statistics.mean(r["seconds"] for r in rows)
    by_size = defaults.keep_mb * 1_000_000 / per_track
    kept = min(defaults.keep_tracks, by_size)
    summary = {
        "composer": load_composer(args.checkpoint, args.seed).id, "tracks": len(rows),
        "mean_track_seconds": round(mean_seconds, 1),
        "mean_bytes_per_track": round(per_track), "bytes_per_minute_of_music": round(per_second * 60),
        "median_write_cpu_ms": statistics.median(r["write_cpu_ms"] for r in rows),
        "median_write_wall_ms": statistics.median(r["write_wall_ms"] for r in rows),
        "defaults": {"keep_tracks": defaults.keep_tracks, "keep_mb": defaults.keep_mb,
                     "tracks_kept": int(kept), "bound_by": "keep_tracks" if kept == defaults.keep_tracks else "keep_mb",
                     "hours_of_music_kept": round(kept * mean_seconds / 3600, 1)},
        "machine": platform.platform(), "python": platform.python_version(),
        "heap_across_a_full_archive": heap_across_a_full_archive(tracks, defaults.keep_tracks),
    }
    print(f"{'track':<12} {'bars':>4} {'seconds':>7} {'MIDI B':>7} {'JSON B':>6} {'CPU ms':>7} {'wall ms':>7}")
    for r in rows:
        print(f"{r['track_id']:<12} {r['bars']:>4} {r['seconds']:>7.1f} {r['midi_bytes']:>7} {r['json_bytes']:>6} "
              f"{r['write_cpu_ms']:>7.2f} {r['write_wall_ms']:>7.2f}")
    print(f"\n{summary['composer']}: {per_track / 1000:.1f} kB per track ({per_second * 60 / 1000:.1f} kB per minute "
          f"of music); write: {summary['median_write_cpu_ms']:.2f} ms CPU, {summary['median_write_wall_ms']:.2f} ms "
          f"wall (median)")
    print(f"default bounds ({defaults.keep_tracks} tracks, {defaults.keep_mb:g} MB) keep {int(kept)} tracks "
          f"(≈ {summary['defaults']['hours_of_music_kept']} h of music), bound by {summary['defaults']['bound_by']}")
    heap = summary["heap_across_a_full_archive"]
    if heap:
        print(f"C heap in use across {heap['tracks_written']} archived tracks (keeping {heap['kept']}) and "
              f"{heap['now_playing_writes']} now-playing writes: {heap['heap_in_use_mb_before']:.2f} → "
              f"{heap['heap_in_use_mb_after']:.2f} MB, largest step {heap['largest_step_mb']:.2f} MB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "archive.json").write_text(json.dumps({"summary": summary, "tracks": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
