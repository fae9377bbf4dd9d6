"""The track archive in the real `chiplofi stream` (shipped model, real FluidSynth, 25× real
time): played tracks are downloadable as MIDI with the four voices, tempo and key their JSON
says; ids outside the archive are 404; an unusable archive directory never touches the stream."""

from __future__ import annotations

import http.client
import io
import json
import signal
from pathlib import Path

import pytest

from models.midi_lib import pretty_midi
from models.theory import MINOR, parse_key
from test_stream_local import start
from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

SPEED = "25"  # the shipped model's tracks last 2–4 min: 5–10 s each at 25×


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def tracks(port: int) -> list[dict]:
    status_code, _, body = get(port, "/tracks?limit=50")
    assert status_code == 200
    return json.loads(body)


def test_played_tracks_download_as_midi_with_their_voices_tempo_and_key(tmp_path):
    port, state, log = free_port(), tmp_path / "state", tmp_path / "daemon.log"
    daemon = start(["stream", "--speed", SPEED, "--output", "null", "--status-addr", f"127.0.0.1:{port}"], log,
                   env={"CHIPLOFI_STREAM__STATE_DIR": str(state)})
    try:
        model_id = wait_for(lambda: (s := status(port))["checkpoint"]["id"].startswith("chiplofi-vae")
                            and s["checkpoint"]["id"], 90)
        assert model_id, log.read_text()
        # Two of the model's tracks played to their end (the rule-based intro comes before them).
        played = wait_for(lambda: [t for t in tracks(port) if t["model_id"] == model_id][:2][::-1]
                          if len([t for t in tracks(port) if t["model_id"] == model_id]) >= 2 else None, 180)
        assert played, log.read_text()
        for record in played:
            assert record["ended"] == "next track" and record["bars"] >= 16
            card = (state / "tracks" / f"{record['id']}.json").read_bytes()
            assert get(port, f"/tracks/{record['id']}.json")[2] == card
            code, ctype, body = get(port, f"/tracks/{record['id']}.mid")
            assert code == 200 and ctype == "audio/midi"
            assert body == (state / "tracks" / f"{record['id']}.mid").read_bytes()
            midi = pretty_midi.PrettyMIDI(io.BytesIO(body))
            assert [(i.name, i.is_drum) for i in midi.instruments] == [
                ("lead", False), ("harmony", False), ("bass", False), ("drums", True)]
            bar_seconds = 4 * 60.0 / record["tempo_bpm"]
            for part in midi.instruments[2:]:  # bass and drums strike in every bar but an intro's first two,
                # which may hold either back (a sustained lo-fi section strikes its bass once a bar)
                struck = {int(note.start / bar_seconds + 1 / 32) for note in part.notes}  # MIDI ticks round
                assert set(range(2, record["bars"])) <= struck, (part.name, set(range(record["bars"])) - struck)
            assert midi.instruments[0].notes and midi.instruments[1].notes
            _, tempi = midi.get_tempo_changes()
            assert list(tempi) == [pytest.approx(record["tempo_bpm"], abs=0.01)]
            tonic, mode = parse_key(record["key"])
            assert midi.key_signature_changes[0].key_number == tonic + 12 * (mode == MINOR)
            assert record["duration_seconds"] == pytest.approx(record["bars"] * bar_seconds, abs=0.01)
            duration = record["duration_seconds"]
            assert duration - bar_seconds < midi.get_end_time() <= duration + bar_seconds
        first, second = played
        assert second["stream_position_seconds"] >= first["stream_position_seconds"] + first["duration_seconds"] - 0.01
        for path in ("/tracks/../status", "/tracks/..%2f..%2fetc%2fpasswd", "/tracks/%2e%2e/daemon.log",
                     f"/tracks/{first['id']}.mid/..", "/tracks/" + "9" * 300 + ".mid"):
            assert get(port, path)[0] == 404, path
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        kill_if_running(daemon)
    # The track playing at the stop is archived too.
    last = max((state / "tracks").glob("*.json"))
    assert json.loads(last.read_text())["ended"] == "stream stopped"
    assert "track archive" not in log.read_text()  # no warning


def test_an_unusable_archive_directory_is_counted_and_the_stream_plays_on(tmp_path):
    port, state, log = free_port(), tmp_path / "state", tmp_path / "daemon.log"
    state.mkdir()
    (state / "tracks").write_text("a regular file where the archive directory should be")
    daemon = start(["stream", "--speed", SPEED, "--checkpoint", "rule-based", "--output", "null",
                    "--status-addr", f"127.0.0.1:{port}"], log, env={"CHIPLOFI_STREAM__STATE_DIR": str(state)})
    try:
        # The rule-based composer's tracks are 48 bars (≈ 6 s at 25×): wait for three of them.
        failed = wait_for(lambda: (s := status(port))["counters"]["archive_errors"] >= 3 and s, 120)
        assert failed, log.read_text()
        assert failed["archive"]["written"] == 0 and failed["clock"]["advancing"]
        assert failed["counters"]["underruns"] == 0
        position = failed["clock"]["position_seconds"]
        assert wait_for(lambda: status(port)["clock"]["position_seconds"] > position + 10, 30)
        assert get(port, "/tracks")[2] == b"[]\n"
        metrics = get(port, "/metrics")[2].decode()
        assert any(line.startswith("chiplofi_archive_errors_total ") and float(line.split()[1]) >= 3
                   for line in metrics.splitlines())
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        kill_if_running(daemon)
    assert log.read_text().count("track archive: cannot write") == 1
    assert Path(state / "tracks").is_file()
