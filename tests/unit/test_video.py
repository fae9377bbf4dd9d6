"""The picture's parts that need no ffmpeg: track titles, the layout, the pipe's channels, the
static layer, the graph's structure, and the settings errors that name their key."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from PIL import Image

from streamer.config import VideoSettings
from streamer.errors import ConfigError
from streamer.ringbuffer import AudioBlock
from streamer.track_titles import ADJECTIVES, NOUNS, PLACES, track_title
from streamer.types import VOICES
from streamer.video import build_video_graph, pipe_bytes, pipe_channels
from streamer.video_files import VideoFiles, check_video_settings, draw_static_layer
from streamer.video_layout import layout_for
from streamer.wavfile import to_pcm16


def test_track_titles_are_deterministic_readable_and_varied():
    ids = [f"r{seed}-t{n:04d}" for seed in range(4) for n in range(100)]
    titles = [track_title(track_id) for track_id in ids]
    assert titles == [track_title(track_id) for track_id in ids]  # same id, same title
    assert track_title("r0-t0000") == "Mellow Harbor"  # the same on every machine and in every run
    assert len(set(titles)) >= 0.9 * len(ids)
    words = set(ADJECTIVES) | set(NOUNS) | set(PLACES)
    for title in titles:
        assert 2 <= len(title.split()) <= 6 and len(title) <= 32, title
        assert title.split()[0] in ADJECTIVES and any(noun in title for noun in NOUNS)
        assert all(part in words or any(part in w.split() for w in words) for part in title.split()), title
    assert track_title("") == ""


@pytest.mark.parametrize("size,lines,scale,columns", [((1280, 720), 3, 4, 2), ((854, 480), 3, 3, 2),
                                                      ((1080, 1920), 3, 6, 1), ((128, 72), 0, 1, 2)])
def test_layout_puts_every_scope_inside_the_canvas_without_overlap(size, lines, scale, columns):
    layout = layout_for(*size, text_lines=lines)
    assert layout.scale == scale
    assert layout.canvas_w * scale >= size[0] > (layout.canvas_w - 1) * scale
    boxes = [layout.scopes[voice] for voice in VOICES]
    assert len({box.x for box in boxes}) == columns
    for i, box in enumerate(boxes):
        assert box.x >= 0 and box.x + box.w <= layout.canvas_w and box.y >= 0 and box.y + box.h <= layout.canvas_h
        for other in boxes[i + 1:]:
            apart = (box.x + box.w <= other.x or other.x + other.w <= box.x
                     or box.y + box.h <= other.y or other.y + other.h <= box.y)
            assert apart, (box, other)
        assert box.y >= (layout.text_y[-1] + layout.small_size if lines else layout.title_y + layout.title_size)
        assert box.y + box.h <= layout.now_title_y  # above now playing
    assert layout_for(*size, pixel_size=1).scale == 1


def test_pipe_carries_the_mix_then_one_channel_per_voice():
    assert pipe_channels(VideoSettings()) == 2 + len(VOICES)
    assert pipe_channels(VideoSettings(layout=("waveform", "now_playing"))) == 2
    pcm = np.linspace(-0.5, 0.5, 20, dtype=np.float32).reshape(10, 2)
    stems = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)
    block = AudioBlock(pcm, to_pcm16(pcm), 0, 44100, stems)
    frames = np.frombuffer(pipe_bytes(block, 6), dtype="<i2").reshape(10, 6)
    assert np.array_equal(frames[:, :2], np.frombuffer(block.pcm16, dtype="<i2").reshape(10, 2))
    assert np.array_equal(frames[:, 2:], np.frombuffer(to_pcm16(stems), dtype="<i2").reshape(10, 4))
    assert pipe_bytes(block, 2) == block.pcm16
    silent = np.frombuffer(pipe_bytes(AudioBlock(pcm, to_pcm16(pcm), 0, 44100), 6), dtype="<i2").reshape(10, 6)
    assert not silent[:, 2:].any()


def _files(tmp_path, **changes) -> VideoFiles:
    values = dict(directory=tmp_path, static_layer=tmp_path / "static.png", background=None, logo=None,
                  now_title=tmp_path / "title.txt", now_details=tmp_path / "details.txt",
                  thumbnail=tmp_path / "thumbnail.jpg")
    return VideoFiles(**{**values, **changes})


def test_graph_draws_a_scope_per_voice_and_times_every_layer_by_the_audio(tmp_path):
    graph = build_video_graph(VideoSettings(), _files(tmp_path), 44100).graph
    assert graph.count("showwaves=") == len(VOICES) and "channelsplit" in graph
    assert "flags=neighbor" in graph and "[vout]" in graph and "[aout]" in graph and "[vthumb]" in graph
    assert "reload=1" in graph  # the now-playing text is re-read
    assert not re.search(r"(^|[;\]])(color|testsrc|nullsrc)=", graph)  # no source with a clock of its own
    still = VideoSettings(background=str(tmp_path / "a.png"), layout=("now_playing", "title"))
    picture = build_video_graph(still, _files(tmp_path, background=tmp_path / "background.png", thumbnail=None),
                                44100)
    assert picture.graph.count("showwaves=") == 1 and "0x000000@0" in picture.graph  # a see-through clock
    assert "loop=loop=-1:size=1" in picture.graph and "[vthumb]" not in picture.graph
    loop = VideoSettings(background=str(tmp_path / "a.mp4"))
    moving = build_video_graph(loop, _files(tmp_path, background=tmp_path / "background.mkv"), 44100)
    assert moving.inputs[-1] == (str(tmp_path / "background.mkv"), {"stream_loop": "-1"})
    assert "setpts=N[bg]" in moving.graph  # background frame N is output frame N


def test_static_layer_is_pixel_text_and_see_through_over_a_picture():
    settings = VideoSettings(text=("a line",))
    layout = layout_for(854, 480, text_lines=1)
    opaque = draw_static_layer(settings, layout, over_picture=False)
    assert opaque.size == (layout.canvas_w, layout.canvas_h)
    pixels = np.asarray(opaque)
    assert (pixels[..., 3] == 255).all()
    # Un-anti-aliased: the title's pixels are the background's colour or the text's, nothing between.
    title = pixels[layout.title_y:layout.title_y + layout.title_size, :layout.canvas_w // 2, :3].reshape(-1, 3)
    colours = {tuple(int(c) for c in p) for p in title}
    assert colours == {(0x1b, 0x15, 0x30), (0xf4, 0xe9, 0xd8)}
    glass = np.asarray(draw_static_layer(settings, layout, over_picture=True))
    box = layout.scopes["bass"]
    assert glass[0, -1, 3] == 0  # nothing drawn there: see-through
    assert 0 < glass[box.y + box.h // 2, box.x + box.w // 2, 3] < 255  # a darkened panel
    assert tuple(glass[box.y, box.x + box.w // 2]) == (0x3c, 0xbc, 0xfc, 255)  # the bass colour's border
    assert isinstance(opaque, Image.Image)


@pytest.mark.parametrize("changes,key", [
    ({"layout": ("scopes", "piano")}, "video.layout"),
    ({"scope_colours": ("#ffffff",)}, "video.scope_colours"),
    ({"scope_colours": ("#ffffff", "#ffffff", "#ffffff", "red")}, "video.scope_colours"),
    ({"text": ("a", "b", "c", "d")}, "video.text"),
    ({"title": "two\nlines"}, "video.title"),
    ({"text_colour": "white"}, "video.text_colour"),
    ({"background": "blue"}, "video.background"),
    ({"background": "/no/such/picture.png"}, "video.background"),
    ({"background": "/no/such/loop.avi"}, "video.background"),
    ({"logo": "/no/such/logo.png"}, "video.logo"),
    ({"logo": "/etc/hostname"}, "video.logo"),
    ({"font": "/etc/hostname"}, "video.font"),
])
def test_bad_video_settings_give_one_line_naming_the_key(changes, key):
    with pytest.raises(ConfigError) as raised:
        check_video_settings(dataclasses.replace(VideoSettings(), **changes))
    message = str(raised.value)
    assert message.startswith(f"{key}: ") and "\n" not in message

