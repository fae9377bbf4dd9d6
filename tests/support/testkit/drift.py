"""A/V drift from a recording's packet timestamps, as ffprobe lists them: each stream's slip (how
far a packet's timestamp is from where the packets before it put it), gaps, reordering, and the
audio-minus-video drift sampled over the file. bench/bench_soak.py reports it for a day of
audio; testkit.receiver checks it on what a test stream delivered."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DRIFT_POINTS = 100  # drift samples over a file


@dataclass
class StreamTimeline:
    """One stream's packets, in file order: slips, gaps and order faults."""

    first: float | None = None
    held: float = 0.0  # media the packets so far hold, seconds
    last_pts: float = -1e18
    end: float = 0.0  # pts + duration of the latest packet
    packets: int = 0
    gaps: int = 0  # a packet later than the previous one's end by more than half a packet
    non_monotonic: int = 0
    max_abs_slip: float = 0.0

    def add(self, pts: float, duration: float) -> float:
        if self.first is None:
            self.first = pts
        elif pts <= self.last_pts:
            self.non_monotonic += 1
        elif pts - self.end > duration / 2:
            self.gaps += 1
        slip = pts - (self.first + self.held)
        self.max_abs_slip = max(self.max_abs_slip, abs(slip))
        self.held += duration
        self.last_pts = max(self.last_pts, pts)
        self.end = max(self.end, pts + duration)
        self.packets += 1
        return slip


@dataclass
class DriftReport:
    audio: StreamTimeline = field(default_factory=StreamTimeline)
    video: StreamTimeline = field(default_factory=StreamTimeline)
    points: list[dict[str, float]] = field(default_factory=list)  # sampled drift over the file

    @property
    def start_offset(self) -> float:
        return (self.audio.first or 0.0) - (self.video.first or 0.0)

    frame_seconds: float = 0.0

    @property
    def end_drift(self) -> float:
        """How much more than one video frame the two ends differ by. The video is made in whole
        frames of 1/fps of audio (200 ms at 5 fps) and the audio in whole AAC packets after the
        daemon's last 1024-frame block, so the ends differ by up to a frame without any drift."""
        return max(0.0, abs(self.audio.end - self.video.end) - self.frame_seconds)

    @property
    def max_drift(self) -> float:
        return max([abs(p["drift"]) for p in self.points] + [0.0])


def _nominal_durations(path: Path) -> dict[str, tuple[str, float]]:
    """Stream index → (audio|video, seconds one packet holds): from the codec, not from the
    file's rounded packet durations (Matroska keeps milliseconds; 1024/44100 s is not one)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=index,codec_type,codec_name,sample_rate,r_frame_rate", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    kinds = {}
    for stream in json.loads(out)["streams"]:
        if stream["codec_type"] == "audio":
            frame = {"aac": 1024, "mp3": 1152}.get(stream["codec_name"], 1024)
            kinds[str(stream["index"])] = ("audio", frame / int(stream["sample_rate"]))
        elif stream["codec_type"] == "video":
            num, den = stream["r_frame_rate"].split("/")
            kinds[str(stream["index"])] = ("video", int(den) / int(num))
    return kinds


def packet_drift(path: Path, length: float) -> DriftReport:
    """Stream ffprobe's packet list of `path` (a day of audio is millions of packets)."""
    kinds = _nominal_durations(path)
    proc = subprocess.Popen(["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts_time",
                             "-of", "csv=p=0", str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    report = DriftReport()
    slips = {"audio": 0.0, "video": 0.0}
    next_point = 0.0
    step = length / DRIFT_POINTS
    for line in proc.stdout:
        index, _, pts_text = line.strip().partition(",")
        if index not in kinds or pts_text in ("", "N/A"):
            continue
        kind, duration = kinds[index]
        report.frame_seconds = duration if kind == "video" else report.frame_seconds
        pts = float(pts_text)
        slips[kind] = getattr(report, kind).add(pts, duration)
        if kind == "audio" and pts >= next_point and report.video.packets:
            # The constant start offset (the AAC encoder's priming) is reported on its own.
            report.points.append({"audio_seconds": round(pts, 3), "drift": slips["audio"] - slips["video"]})
            next_point += step
    if proc.wait() != 0 or not report.audio.packets or not report.video.packets:
        raise RuntimeError(f"ffprobe could not list the audio and video packets of {path}")
    return report
