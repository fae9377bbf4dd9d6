"""Track archive: what a track is, MIDI + JSON files, bounds (oldest first), atomic writes, disk
errors (one warning, counted), a writer that never holds up the audio thread, /tracks over HTTP
with strict ids, and the daemon archiving what played."""

import errno
import json
import logging
import sys
import threading

import pytest

from models.midi_lib import pretty_midi
from streamer import archive as archive_module
from streamer.archive import (
    ARCHIVE_ID,
    NEXT_TRACK,
    STREAM_STOPPED,
    TOO_LONG,
    PlayedTrack,
    TrackArchive,
    TrackRecorder,
    track_midi_bytes,
)
from streamer.composer import RuleBasedComposer
from streamer.daemon import Daemon
from streamer.fallback import RuleBasedParts
from streamer.files import write_atomic
from streamer.ringbuffer import BarEntry
from streamer.status import StatusServer
from streamer.track_titles import track_title
from streamer.video import NowPlayingFile
from test_status import _get as get
from testkit.daemon import unpaced_config
from testkit.doubles import RecordingSink

MB = 1_000_000


def played(track_id="r0-t0001", bars=4, started_at=1_700_000_000.25, seed=3, tonic=9, tempo=84.0, ended=NEXT_TRACK):
    parts = RuleBasedParts(seed=seed, tonic=tonic, tempo_bpm=tempo, track_id=track_id)
    return PlayedTrack(track_id, "rule-based-abc", seed, tuple(parts.next_bar() for _ in range(bars)),
                       started_at, 12.5, ended)


def files(directory):
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------- a track, as MIDI and JSON


def test_midi_has_the_four_voices_the_notes_where_they_played_the_tempo_and_the_key():
    track = played(bars=3, tonic=9, tempo=84.0)  # A major, rule-based
    midi = pretty_midi.PrettyMIDI(__import__("io").BytesIO(track_midi_bytes(track)))
    assert [(i.name, i.is_drum) for i in midi.instruments] == [
        ("lead", False), ("harmony", False), ("bass", False), ("drums", True)]
    _, tempi = midi.get_tempo_changes()
    assert list(tempi) == [pytest.approx(84.0, abs=0.01)]
    assert pretty_midi.key_number_to_key_name(midi.key_signature_changes[0].key_number) == "A Major"
    seconds_per_beat = 60.0 / 84.0
    for instrument in midi.instruments:
        expected = sorted((round((index * 4 + n.start) * seconds_per_beat, 3), n.pitch)
                          for index, bar in enumerate(track.bars) for n in bar.notes if n.voice == instrument.name)
        assert expected and sorted((round(n.start, 3), n.pitch) for n in instrument.notes) == expected


def test_recorder_cuts_tracks_where_another_track_starts_and_skips_fallback_bars():
    archive = TrackArchive("/nonexistent-unused", 10, MB)
    submitted = []
    archive.submit = submitted.append
    recorder = TrackRecorder(archive, max_bars=5)
    a = RuleBasedParts(track_id="s1-t0000")
    b = RuleBasedParts(track_id="s1-t0001")
    bed = RuleBasedParts(track_id="fallback")
    recorder.bar_started(BarEntry(a.next_bar(), "model-x", 1), False, 0.0)
    recorder.bar_started(BarEntry(a.next_bar(), "model-x", 1), False, 3.0)
    recorder.bar_started(BarEntry(bed.next_bar(), "fallback"), True, 6.0)  # an underrun, covered
    recorder.bar_started(BarEntry(a.next_bar(), "model-x", 1), False, 9.0)
    assert submitted == []  # still playing
    recorder.bar_started(BarEntry(b.next_bar(), "model-x", 1), False, 12.0)
    [first] = submitted
    assert (first.track_id, first.composer_id, first.seed, first.ended) == ("s1-t0000", "model-x", 1, NEXT_TRACK)
    assert [bar.bar_index for bar in first.bars] == [0, 1, 2] and first.stream_seconds == 0.0
    for _ in range(5):
        recorder.bar_started(BarEntry(b.next_bar(), "model-x", 1), False, 15.0)
    assert submitted[1].ended == TOO_LONG and len(submitted[1].bars) == 5  # memory stays bounded
    recorder.finish()
    assert submitted[2].ended == STREAM_STOPPED and [bar.bar_index for bar in submitted[2].bars] == [5]
    recorder.finish()
    assert len(submitted) == 3  # nothing left to finish


def test_a_track_is_written_as_midi_and_json(tmp_path):
    archive = TrackArchive(tmp_path / "tracks", 10, MB)
    track = played(bars=4, tempo=84.0)
    archive_id = archive.write(track)
    assert ARCHIVE_ID.fullmatch(archive_id) and archive_id == "20231114-221320-r0-t0001"
    assert files(tmp_path / "tracks") == [f"{archive_id}.json", f"{archive_id}.mid"]
    record = json.loads((tmp_path / "tracks" / f"{archive_id}.json").read_text())
    assert record == {"id": archive_id, "track_id": "r0-t0001", "title": track_title("r0-t0001"), "seed": 3,
                      "model_id": "rule-based-abc",
                      "key": "A major", "tempo_bpm": 84.0, "started_at": "2023-11-14T22:13:20.250Z",
                      "stream_position_seconds": 12.5, "duration_seconds": round(4 * 4 * 60 / 84.0, 3),
                      "bars": 4, "first_bar": 0, "ended": NEXT_TRACK,
                      "midi_bytes": (tmp_path / "tracks" / f"{archive_id}.mid").stat().st_size}
    # The same track id starting in the same second (a restart) gets its own id.
    assert archive.write(track) == archive_id + "-2"
    assert archive.written == 2 and archive.errors == 0
    assert [r["id"] for r in archive.recent(5)] == [archive_id + "-2", archive_id]


# ----------------------------------------------------------------------------- bounds


def test_count_bound_deletes_the_oldest_first(tmp_path):
    archive = TrackArchive(tmp_path, keep_tracks=3, keep_bytes=100 * MB)
    ids = [archive.write(played(f"r0-t{i:04d}", bars=2, started_at=1_700_000_000 + 60 * i)) for i in range(6)]
    assert files(tmp_path) == sorted(f"{i}.{ext}" for i in ids[3:] for ext in ("json", "mid"))
    assert archive.deleted == 3
    assert [r["id"] for r in archive.recent(10)] == ids[:2:-1]  # newest first


def test_archive_and_now_playing_writes_intern_no_file_names(tmp_path, monkeypatch):
    """The archive lists its directory (up to 2 × keep_tracks files) after every track, and the
    now-playing text is rewritten at every bar through a temporary file. Python 3.11's pathlib
    interns each part of a Path; every name interned and freed again uses up a slot of the
    interpreter's interned-string table until it is rebuilt, and the rebuild doubled it: a Path
    per file stepped the daemon's RSS up by 3.7 MB part-way through a day."""
    archive = TrackArchive(tmp_path / "tracks", keep_tracks=10, keep_bytes=100 * MB)
    for i in range(30):
        archive.write(played(f"r0-t{i:04d}", bars=1, started_at=1_700_000_000 + 60 * i))
    now_playing = NowPlayingFile(tmp_path / "nowplaying.txt")
    now_playing.write("before")
    interned: list[str] = []
    real_intern = sys.intern
    monkeypatch.setattr(sys, "intern", lambda text: interned.append(text) or real_intern(text))
    archive.write(played("r0-t0030", bars=1, started_at=1_700_000_000 + 60 * 30))
    archive.recent(20)  # what /tracks asks for
    for bar in range(20):
        now_playing.write(f"bar {bar}")
    assert interned == []
    assert len(files(tmp_path / "tracks")) == 20 and archive.deleted == 21
    assert (tmp_path / "nowplaying.txt").read_text() == "bar 19" and files(tmp_path) == ["nowplaying.txt", "tracks"]


def test_size_bound_deletes_the_oldest_first_and_keeps_the_newest(tmp_path):
    probe = TrackArchive(tmp_path / "probe", 100, 100 * MB)
    probe.write(played(bars=8))
    one_track = sum(p.stat().st_size for p in (tmp_path / "probe").iterdir())
    archive = TrackArchive(tmp_path / "a", keep_tracks=100, keep_bytes=int(2.5 * one_track))
    ids = [archive.write(played(f"r0-t{i:04d}", bars=8, started_at=1_700_000_000 + 60 * i)) for i in range(5)]
    kept = sorted({name.rsplit(".", 1)[0] for name in files(tmp_path / "a")})
    assert kept == ids[3:]
    assert sum(p.stat().st_size for p in (tmp_path / "a").iterdir()) <= 2.5 * one_track
    tiny = TrackArchive(tmp_path / "tiny", keep_tracks=100, keep_bytes=1)  # less than one track
    ids = [tiny.write(played(f"r0-t{i:04d}", started_at=1_700_000_000 + 60 * i)) for i in range(3)]
    assert files(tmp_path / "tiny") == [f"{ids[-1]}.json", f"{ids[-1]}.mid"]


def test_files_that_are_not_the_archives_are_left_alone_and_crash_leftovers_are_tidied(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "20230101-000000-old.mid").write_bytes(b"MThd")  # its JSON never came (a crash)
    (tmp_path / ".20230101-000000-x.mid.1.2.tmp").write_bytes(b"half")
    archive = TrackArchive(tmp_path, keep_tracks=1, keep_bytes=MB)
    archive.start()
    archive.submit(played())
    archive.submit(played("r0-t0002", started_at=1_700_000_100))
    archive.stop(10)
    assert files(tmp_path) == ["20231114-221500-r0-t0002.json", "20231114-221500-r0-t0002.mid", "notes.txt"]


# ----------------------------------------------------------------------------- atomic writes, errors


def test_atomic_write_keeps_the_old_file_when_the_new_one_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    write_atomic(target, b"old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module.os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_atomic(target, b"new and longer")
    assert files(tmp_path) == ["a.json"] and target.read_bytes() == b"old"


def test_now_playing_text_is_replaced_whole_and_a_failed_write_keeps_the_old_text(tmp_path, monkeypatch, caplog):
    text = NowPlayingFile(tmp_path / "nowplaying.txt")
    text.write("track a")
    assert (tmp_path / "nowplaying.txt").read_text() == "track a"

    fsyncs = []
    monkeypatch.setattr(archive_module.os, "fsync", fsyncs.append)
    text.write("track b")
    assert fsyncs == []  # written at every bar by the audio thread: never waits for the disk

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module.os, "replace", disk_full)
    with caplog.at_level(logging.WARNING, logger="streamer.video"):
        text.write("track c")
    assert files(tmp_path) == ["nowplaying.txt"] and (tmp_path / "nowplaying.txt").read_text() == "track b"
    assert "now-playing text file" in caplog.text and "not updated" in caplog.text
    monkeypatch.undo()
    text.write("track c")  # not taken as written the first time: written now
    assert (tmp_path / "nowplaying.txt").read_text() == "track c"


def test_a_full_disk_is_counted_warned_once_and_leaves_no_partial_files(tmp_path, monkeypatch, caplog):
    archive = TrackArchive(tmp_path, 10, MB)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_module.os, "fsync", disk_full)
    with caplog.at_level(logging.INFO, logger="streamer.archive"):
        for i in range(4):
            assert archive.write(played(f"r0-t{i:04d}")) is None
        assert archive.errors == 4 and archive.last_error == "OSError: No space left on device"
        assert files(tmp_path) == []
        monkeypatch.undo()
        assert archive.write(played("r0-t0009")) is not None
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2 and messages[0][0] == "WARNING" and "No space left" in messages[0][1]
    assert messages[1] == ("INFO", f"track archive: writing to {tmp_path} again")


def test_an_unwritable_directory_is_counted_and_warned_once(tmp_path, caplog):
    (tmp_path / "state").write_text("a regular file where a directory should be")
    archive = TrackArchive(tmp_path / "state" / "tracks", 10, MB)
    archive.start()
    with caplog.at_level(logging.WARNING, logger="streamer.archive"):
        for i in range(5):
            archive.submit(played(f"r0-t{i:04d}"))
        archive.stop(10)
    assert archive.errors == 5 and archive.written == 0 and "NotADirectoryError" in archive.last_error
    assert len(caplog.records) == 1 and "cannot write to" in caplog.records[0].getMessage()
    assert archive.recent(10) == [] and archive.file_for("20231114-221320-r0-t0000.mid") is None


def test_submit_never_waits_for_a_stuck_disk(tmp_path):
    archive = TrackArchive(tmp_path, 10, MB, queue_tracks=2)
    release, writing = threading.Event(), threading.Event()
    real_write = archive.write

    def stuck_write(track):
        writing.set()
        release.wait(30)
        return real_write(track)

    archive.write = stuck_write
    archive.start()
    assert archive.submit(played("r0-t0000"))
    assert writing.wait(10)  # the writer holds that track; two more fit in the queue
    results = [archive.submit(played(f"r0-t{i:04d}", started_at=1_700_000_000 + i)) for i in range(1, 6)]
    assert results == [True, True, False, False, False]
    assert archive.dropped == 3 and archive.errors == 3
    release.set()
    archive.stop(10)
    assert archive.written == 3


# ----------------------------------------------------------------------------- HTTP


class Provider:
    def status(self):
        return {}

    def recent_bars(self):
        return []

    def health(self):
        return True, "ok"

    def readiness(self):
        return True, "ok"


@pytest.fixture
def served(tmp_path):
    archive = TrackArchive(tmp_path / "state" / "tracks", 10, MB)
    ids = [archive.write(played(f"r0-t{i:04d}", started_at=1_700_000_000 + 60 * i)) for i in range(3)]
    (tmp_path / "state" / "secret.json").write_text('{"secret": 1}')
    (tmp_path / "state" / "tracks" / "20231114-000000-link.json").symlink_to(tmp_path / "state" / "secret.json")
    server = StatusServer(("127.0.0.1", 0), Provider(), archive=archive)
    server.start()
    yield server, archive, ids
    server.stop()


def test_tracks_list_newest_first_with_a_limit(served):
    server, _, ids = served
    status, ctype, body = get(server, "/tracks")
    assert status == 200 and ctype == "application/json"
    assert [t["id"] for t in json.loads(body)] == ids[::-1]
    assert [t["id"] for t in json.loads(get(server, "/tracks?limit=2")[2])] == ids[:0:-1]
    for bad in ("0", "-1", "x", "501", "1e3", ""):
        assert get(server, f"/tracks?limit={bad}")[0] == 400


def test_track_downloads(served):
    server, archive, ids = served
    status, ctype, body = get(server, f"/tracks/{ids[1]}.mid")
    assert status == 200 and ctype == "audio/midi"
    assert body == (archive.directory / f"{ids[1]}.mid").read_bytes() and body[:4] == b"MThd"
    status, ctype, body = get(server, f"/tracks/{ids[1]}.json")
    assert status == 200 and ctype == "application/json" and json.loads(body)["id"] == ids[1]


@pytest.mark.parametrize("path", [
    "/tracks/../secret.json", "/tracks/..%2fsecret.json", "/tracks/%2e%2e/secret.json",
    "/tracks/%2e%2e%2fsecret.json", "/tracks/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/tracks//etc/passwd",
    "/tracks/%2Fetc%2Fpasswd", "/tracks/20231114-221320-r0-t0000/../../secret.json",
    "/tracks/20231114-221320-r0-t0000.mid/", "/tracks/20231114-221320-r0-t0000.MID",
    "/tracks/20231114-221320-r0-t0000.txt", "/tracks/20231114-221320-r0-t0000", "/tracks/",
    "/tracks/20231114-221320-" + "a" * 65 + ".mid", "/tracks/2023111-221320-x.mid",
    "/tracks/20231114-221320-nosuchtrack.mid", "/tracks/20231114-000000-link.json",
    "/tracks/20231114-221320-r0-t0000.mid%00", "/tracks/20231114-221320-r0%2dt0000.mid",
])
def test_track_paths_outside_the_archive_are_404(served, path):
    status, _, body = get(served[0], path)
    assert status == 404 and b"secret" not in body


def test_tracks_404_without_an_archive():
    server = StatusServer(("127.0.0.1", 0), Provider())
    server.start()
    try:
        assert get(server, "/tracks")[0] == 404 and get(server, "/tracks/20231114-221320-x.mid")[0] == 404
    finally:
        server.stop()


# ----------------------------------------------------------------------------- the daemon


def run_daemon(tmp_path, seconds: float):
    config = unpaced_config(tmp_path / "state", seed=5)
    sink = RecordingSink("collect")
    # Two-bar tracks (≈ 6 s each), so a short run plays several.
    daemon = Daemon(config, environ={}, duration=seconds, sinks=[sink],
                    composer_loader=lambda setting, seed: RuleBasedComposer(seed, track_bars=2))
    assert daemon.run() == 0
    return daemon, sink


def test_the_daemon_archives_every_track_that_played(tmp_path):
    daemon, sink = run_daemon(tmp_path, 20.0)
    records = daemon.archive.recent(100)[::-1]  # oldest first
    assert len(records) >= 3 and daemon.status()["counters"]["archive_errors"] == 0
    assert [r["track_id"] for r in records] == [f"r5-t{i:04d}" for i in range(len(records))]
    assert all(r["bars"] == 2 and r["ended"] == NEXT_TRACK and r["seed"] == 5 for r in records[:-1])
    assert records[-1]["ended"] == STREAM_STOPPED  # still playing when the run ended
    assert all(r["model_id"] == daemon.composers.composer.id for r in records)
    positions = [r["stream_position_seconds"] for r in records]
    assert positions[0] == 0.0 and all(b - a == pytest.approx(r["duration_seconds"], abs=0.01)
                                       for a, b, r in zip(positions, positions[1:], records, strict=False))
    midi = pretty_midi.PrettyMIDI(str(daemon.archive.directory / f"{records[0]['id']}.mid"))
    assert [i.name for i in midi.instruments] == ["lead", "harmony", "bass", "drums"]
    assert daemon.status()["archive"]["written"] == len(records)


def test_an_unwritable_archive_leaves_the_stream_alone(tmp_path, caplog):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "tracks").write_text("a file where the archive directory should be")
    with caplog.at_level(logging.WARNING, logger="streamer.archive"):
        daemon, sink = run_daemon(tmp_path, 20.0)
    status = daemon.status()
    assert abs(sink.frames - 20.0 * 44100) <= 1024 and status["counters"]["underruns"] == 0
    assert status["counters"]["archive_errors"] >= 3 and status["archive"]["written"] == 0
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
