"""CPU of the picture, side by side in one run: the 8-bit picture against the waveform picture
it replaced, and the daemon against a bare ffmpeg drawing the same picture.

Rows (one per preset, then the other backgrounds at --preset): three processes run at the same
time for --seconds after --warmup, CPU from /proc as % of one core:
  daemon        `chiplofi stream` to a local FLV file: Python + its ffmpeg, the picture as configured
  bare          ffmpeg alone, `-re`, on pre-rendered pipe audio (mix + voice stems), the same
                filter graph, inputs and encoder settings as the daemon's ffmpeg (the floor)
  waveform      ffmpeg alone, `-re`, on the same audio's mix, with the picture before the 8-bit one
                (a full-size showwaves band over a flat colour, three lines of drawtext)
Ratios: bare / waveform (the picture's own cost; goal at 480p15 with the default ≤ 1.3) and
daemon / bare. Speeds (media seconds per wall second over the window, from each ffmpeg's
progress; the daemon's from /status) say whether each kept real time: on a machine too busy to
give them what they need, a CPU figure is what they got, and a speed under ~0.97 marks it.
Backgrounds are made here by ffmpeg's own sources (a GIF, a video loop, a still).
Run: .venv/bin/python bench/bench_video.py [--seconds 20] [--warmup 8] [--preset 480p15]
     [--presets 720p30,480p15,still]
Writes bench/results/video.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from bench_daemon import get_status, machine_description, media_seconds, wait_ready  # noqa: E402
from streamer.config import Config, VideoSettings  # noqa: E402
from streamer.video import (  # noqa: E402
    PRESETS,
    build_video_graph,
    encoder_options,
    escape_filter_value,
    pipe_channels,
    pipe_layout,
    preset_of,
    thumbnail_output,
)
from streamer.video_files import VideoFiles, prepare_video_files  # noqa: E402
from testkit.procfs import children, cpu_seconds  # noqa: E402
from testkit.waiting import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_RATIO = 1.3
RATE = 44100


def prerender_pipe_audio(path: Path, seconds: float, seed: int = 0) -> None:
    """What the daemon writes to ffmpeg's pipe, to a raw file: rule-based bars rendered with their
    voice stems, the mix through the lo-fi chain; 16-bit, 6 channels (mix L, R, then the voices)."""
    from streamer.composer import RuleBasedComposer
    from streamer.effects import EffectsChain
    from streamer.render import BarRenderer
    from streamer.wavfile import to_pcm16

    config = Config()
    composer = RuleBasedComposer(seed)
    renderer = BarRenderer(config.render, seed=seed, stems=True)
    effects = EffectsChain.from_settings(config.effects, RATE, seed)
    frames = 0
    with open(path, "wb") as out:
        while frames < seconds * RATE:
            mix = effects.process(renderer.render_bar(composer.next_bar()))
            assert renderer.last_stems is not None
            out.write(to_pcm16(np.concatenate([np.clip(mix, -1, 1), renderer.last_stems], axis=1)))
            frames += len(mix)
    renderer.close()


def bare_picture_args(video: VideoSettings, files: VideoFiles, pcm: Path, output: str,
                      progress: Path | None = None) -> list[str]:
    """The daemon's ffmpeg command for `video`, fed at real time from a raw 6-channel pipe recording
    (`prerender_pipe_audio`) instead of the pipe; channels the picture does not use are dropped."""
    picture = build_video_graph(video, files, RATE)
    channels = pipe_channels(video)
    graph = picture.graph
    if channels == 2:  # the recording has the stems too: keep the mix
        graph = graph.replace("[0:a]", "[0:a]pan=stereo|c0=c0|c1=c1,", 1)
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
    if progress is not None:
        args += ["-progress", str(progress)]
    args += ["-re", "-f", "s16le", "-ar", str(RATE), "-ac", "6", "-ch_layout", pipe_layout(6), "-i", str(pcm)]
    for path, options in picture.inputs:
        for key, value in options.items():
            args += [f"-{key}", value]
        args += ["-i", path]
    args += ["-filter_complex", graph, "-map", "[vout]", "-map", "[aout]"]
    for key, value in encoder_options(video, RATE).items():
        args += [f"-{key}"] + ([value] if value is not None else [])
    args += ["-f", "flv", output]
    if picture.thumbnail is not None:
        target, options = thumbnail_output(picture.thumbnail)
        for key, value in options.items():
            args += [f"-{key}", value]
        args.append(target)
    return args


def waveform_picture_args(video: VideoSettings, pcm: Path, text: Path, output: str, progress: Path) -> list[str]:
    """The picture before the 8-bit one, as it was built: the mix's waveform (showwaves, cline, a
    third of the height) over a flat colour, and three lines of drawtext re-read every frame."""
    preset = preset_of(video)
    w, h, fps = preset.width, preset.height, preset.fps
    wave_h = (h // 3) // 2 * 2
    wave_y = (h - wave_h - h // 8) // 2 * 2
    font_size = max(12, min(w, h) // 20)
    margin = max(8, min(w, h) // 16)
    font = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
    drawtext = (f"drawtext=fontfile={escape_filter_value(font)}:textfile={escape_filter_value(str(text))}:"
                f"reload=1:expansion=none:fontcolor=0xf4e9d8:fontsize={font_size}:line_spacing={font_size // 2}:"
                f"x={margin}:y={margin}")
    graph = ";".join([
        "[0:a]pan=stereo|c0=c0|c1=c1,asplit=2[aout][avis]",
        f"[avis]showwaves=s={w}x{wave_h}:mode=cline:rate={fps}:colors=0x9be7ff,format=yuva420p[wave]",
        f"color=c=0x1b1530:s={w}x{h}:r={fps},format=yuv420p[bg]",
        f"[bg][wave]overlay=x=0:y={wave_y}:shortest=1:format=yuv420,{drawtext},format=yuv420p[vout]",
    ])
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-progress", str(progress), "-re", "-f",
            "s16le", "-ar", str(RATE),
            "-ac", "6", "-ch_layout", pipe_layout(6), "-i", str(pcm), "-filter_complex", graph,
            "-map", "[vout]", "-map", "[aout]"]
    for key, value in encoder_options(video, RATE).items():
        args += [f"-{key}"] + ([value] if value is not None else [])
    return args + ["-f", "flv", output]


def make_backgrounds(directory: Path) -> dict[str, Path]:
    """A still (PNG), an animated GIF and a video loop (MP4), made by ffmpeg's own sources."""
    made = {"still image": directory / "bg.png", "GIF": directory / "bg.gif", "video loop": directory / "bg.mp4"}
    commands = [
        ["-f", "lavfi", "-i", "gradients=s=1280x720:c0=0x24188c:c1=0xf878f8:n=2", "-frames:v", "1",
         str(made["still image"])],
        ["-f", "lavfi", "-i", "life=s=80x45:r=10:ratio=0.3:death_color=0x1b1530:life_color=0x3cbcfc,"
         "scale=640:360:flags=neighbor", "-t", "4", str(made["GIF"])],
        ["-f", "lavfi", "-i", "testsrc2=s=1280x720:r=24", "-t", "4", "-pix_fmt", "yuv420p", str(made["video loop"])],
    ]
    for command in commands:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *command], check=True)
    return made


def run_row(name: str, video: VideoSettings, pcm: Path, tmp: Path, seconds: float, warmup: float) -> dict:
    """The daemon, the bare ffmpeg and the waveform picture at the same time; CPU over one window."""
    work = tmp / name.replace(" ", "-")
    work.mkdir()
    files = prepare_video_files(video, work / "bare-video", "ffmpeg")
    files.now_title.write_text("Mellow Harbor")
    files.now_details.write_text("C major · 73 BPM · intro")
    text = work / "waveform.txt"
    text.write_text("chiplofi · 8-bit lo-fi radio\ntrack r0-t0000 · intro\nC major · 73 BPM · Cmaj7")
    env = {**os.environ, "CHIPLOFI_STREAM__STATE_DIR": str(work / "state"), "CHIPLOFI_ARCHIVE__ENABLED": "false"}
    for field in dataclasses.fields(VideoSettings):
        value = getattr(video, field.name)
        if value != getattr(VideoSettings(), field.name):
            variable = f"CHIPLOFI_VIDEO__{field.name.upper()}"
            env[variable] = json.dumps(list(value) if isinstance(value, tuple) else value)
    status_port = free_port()
    processes: dict[str, subprocess.Popen] = {}
    try:
        with open(work / "daemon.log", "wb") as log_file:
            processes["daemon"] = subprocess.Popen(
                [sys.executable, "-m", "streamer.cli", "stream", "--checkpoint", "rule-based", "--output",
                 str(work / "daemon.flv"), "--status-addr", f"127.0.0.1:{status_port}"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        wait_ready(status_port, processes["daemon"], 90.0)
        progress = {name: work / f"{name}.progress" for name in ("bare", "waveform")}
        with open(work / "bare.log", "wb") as log_file:
            processes["bare"] = subprocess.Popen(
                bare_picture_args(video, files, pcm, str(work / "bare.flv"), progress["bare"]),
                stderr=log_file)
        with open(work / "waveform.log", "wb") as log_file:
            processes["waveform"] = subprocess.Popen(
                waveform_picture_args(video, pcm, text, str(work / "waveform.flv"), progress["waveform"]),
                stderr=log_file)
        time.sleep(warmup)

        def sample() -> dict[str, float]:
            daemon = processes["daemon"].pid
            total = cpu_seconds(daemon)
            own = total - sum(cpu_seconds(child) for child in children(daemon))
            return {"daemon": total, "daemon_python": own, "daemon_ffmpeg": total - own,
                    "bare": cpu_seconds(processes["bare"].pid), "waveform": cpu_seconds(processes["waveform"].pid)}

        def media() -> dict[str, float]:
            sink = next(s for s in get_status(status_port)["sinks"] if s["kind"] == "ffmpeg")
            return {"daemon": sink["detail"]["encoded_seconds"], **{name: media_seconds(path)
                                                                    for name, path in progress.items()}}

        before, media_before, started = sample(), media(), time.monotonic()
        time.sleep(seconds)
        after, media_after, window = sample(), media(), time.monotonic() - started
        dead = [name for name, proc in processes.items() if proc.poll() is not None]
        if dead:
            logs = "\n".join((work / f"{name}.log").read_text()[-2000:] for name in dead)
            raise RuntimeError(f"{name}: {', '.join(dead)} stopped during the run\n{logs}")
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    cpu = {key: round(100.0 * (after[key] - before[key]) / window, 1) for key in before}
    speed = {key: round((media_after[key] - media_before[key]) / window, 2) for key in media_before}
    preset = preset_of(video)
    return {"picture": f"{preset.width}x{preset.height}@{preset.fps}", "window_seconds": round(window, 1),
            "cpu_percent_of_one_core": cpu, "speed": speed,
            "ratio_bare_to_waveform": round(cpu["bare"] / cpu["waveform"], 2) if cpu["waveform"] else None,
            "ratio_daemon_to_bare": round(cpu["daemon"] / cpu["bare"], 2) if cpu["bare"] else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU window of each row (default 20)")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before each window (default 8)")
    parser.add_argument("--preset", default="480p15", choices=tuple(PRESETS),
                        help="preset of the GIF, video and still-image rows (default 480p15)")
    parser.add_argument("--presets", default=",".join(PRESETS), help="presets with the default picture")
    args = parser.parse_args()
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not shutil.which("ffmpeg"):
        print("needs ffmpeg", file=sys.stderr)
        return 1
    machine = machine_description()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp_name:
        tmp = Path(tmp_name)
        pcm = tmp / "pipe.raw"
        prerender_pipe_audio(pcm, args.warmup + args.seconds + 30)
        backgrounds = make_backgrounds(tmp)
        cases = [(f"{preset} default", VideoSettings(preset=preset)) for preset in presets]
        cases += [(f"{args.preset} {kind}", VideoSettings(preset=args.preset, background=str(path)))
                  for kind, path in backgrounds.items()]
        # A still-image channel without scopes: the layout the issue names to save CPU.
        cases.append((f"{args.preset} still image, no scopes",
                      VideoSettings(preset=args.preset, background=str(backgrounds["still image"]),
                                    layout=("now_playing", "title", "text", "logo"))))
        try:
            for name, video in cases:
                rows[name] = run_row(name, video, pcm, tmp, args.seconds, args.warmup)
                print(f"  {name}: {rows[name]['cpu_percent_of_one_core']}", file=sys.stderr)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"{'picture':<34}{'daemon':>8}{'(Python':>9}{'+ ffmpeg)':>10}{'bare':>7}{'waveform':>10}"
          f"{'bare/wave':>10}{'daemon/bare':>12}   speeds daemon/bare/waveform")
    for name, row in rows.items():
        c, v = row["cpu_percent_of_one_core"], row["speed"]
        print(f"{name:<34}{c['daemon']:>8.1f}{c['daemon_python']:>9.1f}{c['daemon_ffmpeg']:>10.1f}{c['bare']:>7.1f}"
              f"{c['waveform']:>10.1f}{row['ratio_bare_to_waveform'] or float('nan'):>10.2f}"
              f"{row['ratio_daemon_to_bare'] or float('nan'):>12.2f}   "
              f"{v['daemon']:.2f}/{v['bare']:.2f}/{v['waveform']:.2f}")
    print(f"(CPU % of one core over {args.seconds:g} s windows, the three columns at the same time; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    default = rows.get("480p15 default")
    if default:
        print(f"default picture at 480p15 / waveform picture: {default['ratio_bare_to_waveform']:.2f} "
              f"(goal ≤ {GOAL_RATIO})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "video.json").write_text(json.dumps({
        "machine": machine, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "what": "% of one core; daemon = chiplofi stream (Python + its ffmpeg) to a file; bare = ffmpeg alone on "
                "pre-rendered pipe audio with the same picture; waveform = ffmpeg alone with the picture before "
                "the 8-bit one; all three at the same time",
        "rows": rows}, indent=2) + "\n")
    ok = default is None or (default["ratio_bare_to_waveform"] or 0) <= GOAL_RATIO
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
