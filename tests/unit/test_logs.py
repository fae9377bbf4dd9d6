"""Redaction of the stream key from log lines, whole or in pieces."""

import logging
import subprocess
import sys

from streamer.config import SinkSettings, VideoSettings
from streamer.logs import REDACTED, RedactingFormatter, redact, register_secret
from streamer.sinks.ffmpeg import FfmpegSink, network_target
from streamer.video_files import VideoFiles

KEY = "abcd-efgh-ijkl-mnop-qrst"


def test_a_key_cut_short_at_the_end_of_a_line_or_starting_one_is_redacted():
    assert redact(f"rtmp://host/live/{KEY}: error", [KEY]) == f"rtmp://host/live/{REDACTED}: error"
    assert redact(f"rtmp://host/live/{KEY[:9]}", [KEY]) == f"rtmp://host/live/{REDACTED}"
    assert redact(f"{KEY[-7:]}': I/O error", [KEY]) == f"{REDACTED}': I/O error"
    assert redact("a line ending in abc", [KEY]) == "a line ending in abc"  # under 4 characters: not a piece


def test_the_formatter_redacts_every_line_of_a_record():
    register_secret(KEY)  # what the daemon does with its key
    formatter = RedactingFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "first /live/%s\nsecond", (KEY[:10],), None)
    assert KEY[:5] not in formatter.format(record)


def test_ffmpeg_output_cut_and_split_anywhere_never_logs_a_piece_of_the_key(tmp_path, caplog):
    """ffmpeg's stderr as it comes: the key in a line cut at 1 kB, chunks split inside the key."""
    picture = VideoFiles(tmp_path, tmp_path / "static.png", None, None, tmp_path / "title.txt", tmp_path / "np.txt",
                         None)
    sink = FfmpegSink([network_target("rtmp://127.0.0.1/live", KEY)], sample_rate=44100, video=VideoSettings(),
                      settings=SinkSettings(), picture=picture, secrets=[KEY])
    long_line = f"[tee @ 0x55] [error] Slave '{'x' * (1000 - 40)}rtmp://127.0.0.1/live/{KEY}'"[:1023]
    lines = [long_line, f"[fifo @ 0x56] [error] Error opening rtmp://127.0.0.1/live/{KEY}: refused",
             f"[flv @ 0x57] [warning] {KEY[5:]} at the start"]
    data = "\n".join(lines).encode() + b"\n"
    script = ("import sys, time\ndata = sys.stdin.buffer.read()\n"
              "for i in range(0, len(data), 7):\n    sys.stderr.buffer.write(data[i:i + 7]); sys.stderr.flush()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(data)
    proc.stdin.close()
    with caplog.at_level(logging.DEBUG, logger="streamer.sinks.ffmpeg"):
        sink._read_stderr(proc)
    proc.wait()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged.count("ffmpeg:") == 3, logged
    assert not [KEY[i:i + 4] for i in range(len(KEY) - 3) if KEY[i:i + 4] in logged], logged
