"""Where each layer of the picture sits, on the low-resolution canvas it is drawn on.

The picture is drawn small (about 180 pixels on the short side by default) and scaled up by a
whole factor with nearest-neighbour, so every edge, scope line and letter stays a crisp block:
the 8-bit look, and far fewer pixels for ffmpeg to draw per frame. Landscape pictures put the
four scopes in a 2 × 2 grid, upright ones (1080x1920) in one column.

    ┌──────────────────────────────────┐
    │ TITLE                      logo  │  title, then up to 3 free text lines
    │ text line                        │
    │ ┌─LEAD──────────┐ ┌─HARMONY─────┐│
    │ │ ∿∿∿∿∿∿∿∿∿∿∿∿∿ │ │ ∿∿∿∿∿∿∿∿∿∿∿ ││  one oscilloscope per voice (or one waveform)
    │ └───────────────┘ └─────────────┘│
    │ ┌─BASS──────────┐ ┌─DRUMS───────┐│
    │ └───────────────┘ └─────────────┘│
    │ Track Title                      │  now playing: title, then key · tempo · section
    │ A minor · 72 BPM · verse         │
    └──────────────────────────────────┘
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.types import VOICES

TARGET_SHORT_SIDE = 180  # canvas pixels on the short side when video.pixel_size = 0
MAX_TEXT_LINES = 3


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Layout:
    """Every position and size, in canvas pixels (the canvas is `scale` times smaller than the output)."""

    scale: int  # output pixels per canvas pixel
    canvas_w: int
    canvas_h: int
    margin: int
    title_size: int  # font sizes, canvas pixels
    small_size: int
    label_size: int
    now_size: int
    title_y: int
    text_y: list[int]  # one per free text line
    scopes: dict[str, Rect]  # voice → its box (the scope is drawn inside the 1-pixel border)
    wave: Rect  # the single waveform, when the layout shows it instead
    now_title_y: int
    now_details_y: int


def pixel_scale(width: int, height: int, pixel_size: int) -> int:
    """Output pixels per canvas pixel: `pixel_size`, or (0) the whole factor giving ~180 px."""
    if pixel_size > 0:
        return pixel_size
    return max(1, round(min(width, height) / TARGET_SHORT_SIDE))


def layout_for(width: int, height: int, pixel_size: int = 0, text_lines: int = 0) -> Layout:
    """The layout of a `width` × `height` output picture."""
    scale = pixel_scale(width, height, pixel_size)
    cw, ch = -(-width // scale), -(-height // scale)  # rounded up: the scale-up then crops nothing away
    short = min(cw, ch)
    margin = max(2, short // 30)
    title_size = max(8, short // 11)
    small_size = max(6, short // 20)
    label_size = max(8, short // 18)
    now_size = max(8, short // 13)
    title_y = margin
    text_lines = min(text_lines, MAX_TEXT_LINES)
    text_y = [title_y + title_size + 3 + i * (small_size + 2) for i in range(text_lines)]
    now_details_y = ch - margin - small_size
    now_title_y = now_details_y - 3 - now_size
    # The scopes fill the band between the header and the now-playing lines.
    header_end = (text_y[-1] + small_size if text_y else title_y + title_size) + margin
    band_top = max(header_end, round(ch * 0.26))
    band_bottom = min(now_title_y - margin, round(ch * 0.78))
    columns = 2 if cw >= ch else 1
    rows = len(VOICES) // columns
    gap = max(2, margin // 2)
    box_w = (cw - 2 * margin - (columns - 1) * gap) // columns
    box_h = max(8, (band_bottom - band_top - (rows - 1) * gap) // rows)
    scopes = {voice: Rect(margin + (i % columns) * (box_w + gap), band_top + (i // columns) * (box_h + gap),
                          box_w, box_h)
              for i, voice in enumerate(VOICES)}
    wave = Rect(margin, band_top, cw - 2 * margin, band_bottom - band_top)
    return Layout(scale, cw, ch, margin, title_size, small_size, label_size, now_size, title_y, text_y, scopes,
                  wave, now_title_y, now_details_y)
