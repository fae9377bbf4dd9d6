"""Faults of the disk and of the files around the daemon: checkpoint cards that are not files,
a full disk under the outputs, state files and directories that vanish, restarts over earlier
recordings. The real `chiplofi stream` runs as its own process (tests/integration/test_faults.py
has the harness), its outputs on a small tmpfs this test mounts (the tests run as root) and
fills up for real; figures go to docs/RELIABILITY.md like the other fault scenarios.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from test_faults import (
    BUFFER_SECONDS,
    KEY,
    SHORT_BUFFER,
    assert_clean_sessions,
    install,
    report,
    session_continuity,
    sink_of,
    stream_process,
    until,
)
from test_stream_local import start
from test_stream_rtmp import write_checkpoint
from testkit.receiver import receiver_fixture
from testkit.waiting import free_port, kill_if_running, status

pytestmark = pytest.mark.integration

receiver = receiver_fixture(KEY)


# ----------------------------------------------------------------------------- disks and files


@contextmanager
def small_disk(directory: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted at `directory` (the tests run as root): a real file system
    that really fills up."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Write a file under `directory` until the disk is full; returns it (delete it to free the disk)."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * (1 << 16))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def media_span(path: Path) -> tuple[float, float]:
    """(first, last) audio timestamp ffprobe reads from a file (a file without its end too)."""
    result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "packet=pts_time",
                             "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=120)
    times = [float(t) for t in result.stdout.split() if t.strip() and t != "N/A"]
    return (min(times), max(times)) if times else (0.0, 0.0)


def media_seconds(path: Path) -> float:
    first, last = media_span(path)
    return last - first


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def ffmpeg_sink(state: dict) -> dict:
    return sink_of(state, "ffmpeg")


def target(state: dict, name: str) -> dict:
    return next(t for t in ffmpeg_sink(state)["detail"]["targets"] if t["target"].endswith(name))


# ----------------------------------------------------------------------------- checkpoint cards


def fifo_card(directory: Path) -> str:
    """vae.json a named pipe: opening it to read waits for a writer that never comes."""
    (directory / "vae.json").unlink()
    os.mkfifo(directory / "vae.json")
    return "not a regular file"


def endless_card(directory: Path) -> str:
    """vae.json /dev/zero (through a symlink): reading it never ends."""
    (directory / "vae.json").unlink()
    (directory / "vae.json").symlink_to("/dev/zero")
    return "not a regular file"


def huge_card(directory: Path) -> str:
    """vae.json a 2 GB regular file (sparse: it takes no disk)."""
    with open(directory / "vae.json", "r+b") as card:
        card.truncate(2 << 30)
    return "more than the"


def test_checkpoint_cards_that_are_not_small_files_are_refused_and_later_reloads_apply(tmp_path):
    good = tmp_path / "good"
    good_id = write_checkpoint(good, seed=0)
    second = tmp_path / "second"
    second_id = write_checkpoint(second, seed=1)
    live = tmp_path / "checkpoint"
    shutil.copytree(good, live)
    rejected = []
    with stream_process(tmp_path, ["--checkpoint", str(live), "--output", "null"], SHORT_BUFFER) as daemon:
        daemon.until(lambda s: s["checkpoint"]["id"] == good_id, 60)
        for count, spoil in enumerate((fifo_card, endless_card, huge_card), start=1):
            install(good, live)
            expected = spoil(live)
            daemon.proc.send_signal(signal.SIGHUP)
            after = daemon.until(lambda s: s["checkpoint"]["reload_failures"] == count
                                 and not s["checkpoint"]["reloading"], 30)
            error = after["checkpoint"]["last_reload_error"]
            rejected.append({"card": spoil.__name__, "error": error, "id_after": after["checkpoint"]["id"]})
            assert "vae.json" in error and expected in error and after["checkpoint"]["id"] == good_id, error
            (live / "vae.json").unlink()
        install(second, live)
        daemon.proc.send_signal(signal.SIGHUP)
        swapped = daemon.until(lambda s: s["checkpoint"]["id"] == second_id, 30)
        assert daemon.alive() and daemon.stop() == 0
    report("checkpoint_cards", rejected=rejected, reload_failures=swapped["checkpoint"]["reload_failures"],
           reloads_ok=swapped["checkpoint"]["reloads"], underruns=swapped["counters"]["underruns"],
           buffer_seconds=BUFFER_SECONDS)
    assert swapped["checkpoint"]["reloads"] == 1 and swapped["counters"]["underruns"] == 0


# ----------------------------------------------------------------------------- a full disk under the outputs


def test_a_full_disk_keeps_what_was_recorded_and_the_outputs_resume_when_space_is_back(tmp_path, receiver):
    with small_disk(tmp_path / "disk", 64) as disk:
        video, audio = disk / "video.mkv", disk / "audio.wav"
        state_dir = disk / "state"
        with stream_process(tmp_path, ["--checkpoint", "rule-based", "--output", receiver.ingest_url,
                                       "--output", str(video), "--output", str(audio)],
                            {"CHIPLOFI_STREAM__STATE_DIR": str(state_dir)}) as daemon:
            daemon.until(lambda s: ffmpeg_sink(s)["connected"] and s["clock"]["position_seconds"] > 12, 60)
            filler = fill(disk)
            filled_at = daemon.status()["clock"]["position_seconds"]
            full = daemon.until(lambda s: target(s, "video.mkv")["state"] == "failing"
                                and sink_of(s, "file")["state"] == "restarting", 30)
            daemon.until(lambda s: s["clock"]["position_seconds"] > filled_at + 20, 40)  # a while on a full disk
            during = daemon.status()
            filler.unlink()
            freed_at = during["clock"]["position_seconds"]
            back = daemon.until(lambda s: sink_of(s, "file")["state"] == "running"
                                and any("disk space is back" in r for r in ffmpeg_sink(s)["detail"]["restart_reasons"])
                                and ffmpeg_sink(s)["connected"], 40)
            back_at = back["clock"]["position_seconds"]
            daemon.until(lambda s: s["clock"]["position_seconds"] > back_at + 12, 30)
            assert daemon.stop() == 0
        log_text = daemon.text()
        parts = {p.name: p for p in disk.iterdir() if p.is_file()}
        seconds = {name: round(media_seconds(path) if name.endswith(".mkv") else wav_seconds(path), 2)
                   for name, path in sorted(parts.items())}
        first_video_pts = media_span(video)[0]
    sessions = session_continuity(receiver)
    warnings = {"disk_full": len(re.findall(r"disk full under", log_text)),
                "file_output": len(re.findall(r"ERROR streamer.sinks.file: file output:", log_text)),
                "now_playing": len(re.findall(r"now-playing text", log_text)),
                "tracebacks": log_text.count("Traceback")}
    report("disk_full", filled_at_s=round(filled_at, 1), freed_at_s=round(freed_at, 1), back_at_s=round(back_at, 1),
           files_seconds=seconds, status_while_full={"video": target(full, "video.mkv"),
                                                     "wav": sink_of(during, "file")["last_error"],
                                                     "wav_frames_dropped": sink_of(during, "file")["frames_dropped"]},
           ffmpeg_restarts=back["sinks"][0]["restarts"], restart_reasons=ffmpeg_sink(back)["detail"]["restart_reasons"],
           receiver_sessions=sessions, warnings=warnings)

    # What was recorded before the disk filled is all there, from the start (a part cut short by
    # the full disk loses at most what ffmpeg or the writer held in memory: a Matroska cluster is ≤ 5 s).
    assert first_video_pts < 1.0, first_video_pts
    assert seconds["video.mkv"] >= filled_at - 6 and seconds["audio.wav"] >= filled_at - 1, seconds
    # ... and both outputs went on in new files once there was space.
    assert seconds.get("video-1.mkv", 0) >= 10 and seconds.get("audio-001.wav", 0) >= 10, seconds
    assert "no space left" in sink_of(during, "file")["last_error"].lower()
    assert "disk full" in target(full, "video.mkv")["last_error"]
    assert 0.0 <= target(full, "video.mkv")["last_error_seconds_ago"] < 5.0  # dated when it happened
    assert warnings["tracebacks"] == 0 and warnings["disk_full"] <= 2 and warnings["file_output"] <= 2, warnings
    assert warnings["now_playing"] <= 4, warnings  # two texts: each warned once, then "written again"
    # The stream to the receiver went on while the disk was full: one new session, when the
    # file's new part began.
    assert len(sessions) <= 2 and ffmpeg_sink(back)["restarts"] == 1
    assert_clean_sessions(sessions)


def test_segmented_recordings_on_a_full_disk_leave_no_empty_files_and_resume(tmp_path):
    with small_disk(tmp_path / "disk", 48) as disk:
        recordings = disk / "state" / "recordings"
        with stream_process(tmp_path, ["--checkpoint", "rule-based"],
                            {"CHIPLOFI_STREAM_KEY": "", "CHIPLOFI_STREAM__STATE_DIR": str(disk / "state")}) as daemon:
            daemon.until(lambda s: s["clock"]["position_seconds"] > 10, 60)
            filler = fill(disk)
            filled_at = daemon.status()["clock"]["position_seconds"]
            full = daemon.until(lambda s: target(s, ".mkv")["state"] == "failing", 30)
            daemon.until(lambda s: s["clock"]["position_seconds"] > filled_at + 15, 30)
            during = sorted((p.name, p.stat().st_size) for p in recordings.iterdir())
            filler.unlink()
            freed_at = daemon.status()["clock"]["position_seconds"]
            back = daemon.until(lambda s: target(s, ".mkv")["state"] == "ok" and ffmpeg_sink(s)["connected"], 30)
            back_at = back["clock"]["position_seconds"]
            after = daemon.until(lambda s: s["clock"]["position_seconds"] > back_at + 12, 30)
            assert daemon.stop() == 0
        files = sorted((p.name, p.stat().st_size) for p in recordings.iterdir())
        seconds = {name: round(media_seconds(recordings / name), 2) for name, _ in files}
        log_text = daemon.text()
    report("recordings_disk_full", filled_at_s=round(filled_at, 1), freed_at_s=round(freed_at, 1),
           back_at_s=round(back_at, 1), restart_reasons=ffmpeg_sink(after)["detail"]["restart_reasons"],
           status_while_full=target(full, ".mkv")["last_error"].split(" in ")[0], files_while_full=during,
           files_seconds=seconds, ffmpeg_restarts=ffmpeg_sink(after)["restarts"],
           disk_full_warnings=log_text.count("disk full under"), tracebacks=log_text.count("Traceback"))
    assert all(size > 0 for _, size in during[:-1]), during  # the attempts' empty files are gone
    assert [name for name, size in files if size == 0] == [], files
    # The segment the disk filled in keeps what reached the disk; a new one holds what came after.
    assert len(files) >= 2 and list(seconds.values())[0] >= 4 and list(seconds.values())[-1] >= 10, seconds
    assert ffmpeg_sink(after)["restarts"] == 1 and log_text.count("Traceback") == 0
    assert log_text.count("disk full under") == 1


def test_the_state_directory_on_a_full_disk_or_deleted_never_takes_the_stream_off_air(tmp_path, receiver):
    with small_disk(tmp_path / "disk", 8) as disk:
        state_dir = disk / "state"
        with stream_process(tmp_path, ["--checkpoint", "rule-based", "--output", receiver.ingest_url],
                            {"CHIPLOFI_STREAM__STATE_DIR": str(state_dir)}) as daemon:
            on_air = daemon.until(lambda s: ffmpeg_sink(s)["connected"], 60)
            # The disk fills while streaming (full at start: the next test).
            filler = fill(disk)
            assert receiver.wait_for_recording(10, 60), daemon.text()[-3000:]
            filler.unlink()
            daemon.until(lambda s: (state_dir / "video" / "nowplaying.txt").exists(), 30)
            (state_dir / "video" / "nowplaying.txt").unlink()
            before = daemon.status()["clock"]["position_seconds"]
            daemon.until(lambda s: s["clock"]["position_seconds"] > before + 10, 30)
            shutil.rmtree(state_dir)
            gone_at = daemon.status()["clock"]["position_seconds"]
            recreated = daemon.until(lambda s: (state_dir / "video" / "nowplaying.txt").exists(), 30)
            after = daemon.until(lambda s: s["clock"]["position_seconds"] > gone_at + 15, 40)
            assert daemon.stop() == 0
    sessions = session_continuity(receiver)
    report("state_dir_lost", on_air_after_start_s=on_air["clock"]["position_seconds"],
           nowplaying_recreated_after_s=round(recreated["clock"]["position_seconds"] - gone_at, 1),
           ffmpeg_restarts=ffmpeg_sink(after)["restarts"], receiver_sessions=sessions,
           readyz_targets=ffmpeg_sink(after)["detail"]["targets"])
    assert ffmpeg_sink(after)["restarts"] == 0 and ffmpeg_sink(after)["connected"]
    assert len(sessions) == 1 and sessions[0]["audio_seconds"] >= after["clock"]["position_seconds"] - 15
    assert_clean_sessions(sessions)


def test_a_state_directory_on_a_disk_full_at_start_still_goes_on_air(tmp_path, receiver):
    with small_disk(tmp_path / "disk", 8) as disk:
        state_dir = disk / "state"
        state_dir.mkdir()
        fill(disk)  # full before the daemon starts: the static layer, texts and position can't be written
        with stream_process(tmp_path, ["--checkpoint", "rule-based", "--output", receiver.ingest_url],
                            {"CHIPLOFI_STREAM__STATE_DIR": str(state_dir)}) as daemon:
            on_air = daemon.until(lambda s: ffmpeg_sink(s)["connected"], 60)
            assert receiver.wait_for_recording(10, 60), daemon.text()[-3000:]
            after = daemon.status()
            assert daemon.stop() == 0
    sessions = session_continuity(receiver)
    report("disk_full_at_start", on_air_after_start_s=on_air["clock"]["position_seconds"],
           ffmpeg_restarts=ffmpeg_sink(after)["restarts"], receiver_sessions=sessions)
    assert ffmpeg_sink(after)["restarts"] == 0 and len(sessions) == 1
    assert "cannot write" in daemon.text()  # said once, not a traceback
    assert "Traceback" not in daemon.text()


# ----------------------------------------------------------------------------- recordings kept within bounds


def test_recordings_are_pruned_at_start_and_on_every_new_segment(tmp_path):
    recordings = tmp_path / "state" / "recordings"
    recordings.mkdir(parents=True)
    for day in range(1, 4):  # an earlier run's recordings: 27 MB, over the 20 MB kept
        old = recordings / f"chiplofi-2020010{day}-000000.mkv"
        with open(old, "wb") as out:
            out.truncate(9_000_000)
        os.utime(old, (1_577_836_800 + day * 86_400,) * 2)
    port = free_port()
    log = tmp_path / "daemon.log"
    env = {"CHIPLOFI_STREAM_KEY": "", "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state"),
           "CHIPLOFI_STREAM__SPEED": "0", "CHIPLOFI_SINKS__RECORD_SEGMENT_MINUTES": "1",
           "CHIPLOFI_SINKS__RECORD_KEEP_MB": "20"}
    proc = start(["stream", "--checkpoint", "rule-based", "--duration", "270", "--status-addr", f"127.0.0.1:{port}"],
                 log, env)
    seen: list[list[tuple[str, int]]] = []
    try:
        while proc.poll() is None:  # what the directory holds, every half second
            seen.append(sorted((p.name, p.stat().st_size) for p in recordings.glob("chiplofi-*.mkv")))
            time.sleep(0.5)
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    final = sorted((p.name, p.stat().st_size) for p in recordings.glob("chiplofi-*.mkv"))
    # Once the first segment of this run exists (the daemon has started): never more kept than
    # the limit besides the segment being written.
    running = [names for names in seen if any(not name.startswith("chiplofi-2020") for name, _ in names)]
    over = [names for names in running if sum(size for _, size in names[:-1]) > 20_000_000]
    report("recordings_pruned", final=final, largest_total_mb=round(max(sum(s for _, s in n) for n in seen) / 1e6, 1),
           samples=len(running), samples_over_the_limit=len(over), deleted_lines=log.read_text().count("deleted old"))
    assert not any(name.startswith("chiplofi-2020") for name, _ in final), final
    assert len(final) == 2 and sum(size for _, size in final) <= 20_000_000, final
    assert running and len(over) <= 2, over  # give or take the second the keeper takes to look


# ----------------------------------------------------------------------------- restarts and SIGKILL


def stream_for(tmp_path: Path, outputs: list[Path], seconds: float, kill: bool = False) -> str:
    port = free_port()
    log = tmp_path / f"daemon-{time.monotonic_ns()}.log"
    proc = start(["stream", "--checkpoint", "rule-based", *[a for o in outputs for a in ("--output", str(o))],
                  "--status-addr", f"127.0.0.1:{port}"], log,
                 {"CHIPLOFI_STREAM_KEY": "", "CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state")})
    try:
        assert until(lambda: status(port)["clock"]["position_seconds"] >= seconds, 60, "audio played")
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        proc.wait(15)
    finally:
        kill_if_running(proc)
    return log.read_text()


def test_restarts_never_overwrite_earlier_files_and_a_killed_run_is_finished_at_the_next_start(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    video, audio = out / "show.mkv", out / "show.wav"
    stream_for(tmp_path, [video, audio], 6)
    first = {"show.mkv": media_seconds(video), "show.wav": wav_seconds(audio)}
    stream_for(tmp_path, [video, audio], 6, kill=True)
    time.sleep(2)  # ffmpeg, left without its daemon, finishes its file on the end of its input
    hidden = [p.name for p in out.iterdir() if p.name.endswith(".part")]
    third_log = stream_for(tmp_path, [video, audio], 6)
    files = sorted(p.name for p in out.iterdir())
    seconds = {name: round(media_seconds(out / name) if name.endswith(".mkv") else wav_seconds(out / name), 2)
               for name in files if not name.startswith(".")}
    report("restarts_keep_files", after_first_run=first, hidden_after_sigkill=hidden, files=seconds)
    assert len(hidden) == 1 and re.fullmatch(r"\.show-001\.wav\.[\w.]+\.part", hidden[0])
    assert files == sorted(["show.mkv", "show-1.mkv", "show-2.mkv", "show.wav", "show-001.wav", "show-002.wav"])
    assert abs(seconds["show.mkv"] - first["show.mkv"]) < 0.1 and seconds["show.wav"] == round(first["show.wav"], 2)
    assert seconds["show-001.wav"] >= 4 and seconds["show-1.mkv"] >= 3  # the killed run's, finished
    assert seconds["show-002.wav"] >= 5 and seconds["show-2.mkv"] >= 4
    assert "left unfinished by an earlier run" in third_log
