"""The README's pictures: frames of real streams, as viewers get them.

Each picture is `chiplofi stream` run for a few seconds into a video file with one look, and one
frame of that file (the H.264 the stream sends, decoded) saved as PNG next to this script:

  default.png      the default picture (480p15, shipped models): one scope per voice, titles
  background.png   an operator's look: a background image, a logo, a title and text lines (720p30)
  upright.png      1080x1920 (vertical live video), shown at half size

The background and the logo are drawn here with Pillow (a pixel-art night town and a cassette).
Run: .venv/bin/python docs/frames/make_frames.py
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECONDS = 14.0
FRAME_AT = 11.0


def night_town(path: Path) -> Path:
    """A 160x90 pixel-art town under a starry sky, scaled 8x with nearest-neighbour."""
    rng = random.Random(7)
    small = Image.new("RGB", (160, 90))
    draw = ImageDraw.Draw(small)
    for y in range(90):  # sky: dark purple to violet, in bands like an 8-bit palette
        band = min(5, y // 12)
        draw.line((0, y, 159, y), fill=[(20, 12, 48), (28, 16, 64), (40, 24, 84), (60, 32, 104), (84, 44, 120),
                                        (112, 56, 132)][band])
    for _ in range(60):
        draw.point((rng.randrange(160), rng.randrange(50)), fill=(252, 252, 220))
    draw.ellipse((122, 8, 136, 22), fill=(252, 228, 160))
    x = 0
    while x < 160:  # buildings with lit windows
        width, height = rng.randrange(10, 22), rng.randrange(18, 48)
        draw.rectangle((x, 90 - height, x + width - 1, 89), fill=(16, 12, 32))
        for wy in range(90 - height + 3, 87, 4):
            for wx in range(x + 2, x + width - 2, 3):
                if rng.random() < 0.35:
                    draw.rectangle((wx, wy, wx, wy + 1), fill=(252, 188, 80))
        x += width + rng.randrange(0, 3)
    small.resize((1280, 720), Image.NEAREST).save(path)
    return path


def cassette(path: Path) -> Path:
    """A 32x32 pixel cassette with a see-through background, scaled 8x."""
    small = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(small)
    draw.rectangle((2, 7, 29, 25), fill=(252, 160, 68, 255))
    draw.rectangle((5, 10, 26, 17), fill=(252, 252, 220, 255))
    draw.ellipse((8, 11, 13, 16), fill=(40, 24, 84, 255))
    draw.ellipse((18, 11, 23, 16), fill=(40, 24, 84, 255))
    draw.rectangle((9, 20, 22, 25), fill=(200, 110, 40, 255))
    small.resize((256, 256), Image.NEAREST).save(path)
    return path


def stream_frame(name: str, config: str, work: Path, half: bool = False) -> Path:
    """Run the stream into a file with `config` ([video] and friends), save one frame as NAME.png."""
    directory = work / name
    directory.mkdir()
    (directory / "chiplofi.toml").write_text(f'[stream]\nstate_dir = "{directory / "state"}"\n'
                                             f'[status]\nenabled = false\n{config}')
    video = directory / "out.mkv"
    subprocess.run([sys.executable, "-m", "streamer.cli", "stream", "--config", str(directory / "chiplofi.toml"),
                    "--output", str(video), "--duration", str(SECONDS)], cwd=ROOT, check=True)
    target = HERE / f"{name}.png"
    scale = ["-vf", "scale=iw/2:ih/2:flags=neighbor"] if half else []
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-ss", str(FRAME_AT), "-i", str(video), "-frames:v", "1",
                    *scale, "-y", str(target)], check=True)
    return target


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chiplofi-frames-") as tmp:
        work = Path(tmp)
        background, logo = night_town(work / "town.png"), cassette(work / "cassette.png")
        made = [
            stream_frame("default", "", work),
            stream_frame("background", f'[video]\npreset = "720p30"\nbackground = "{background}"\n'
                                       f'logo = "{logo}"\ntitle = "night town radio"\n'
                                       'text = ["lo-fi chiptune, composed live, all night"]\n', work),
            stream_frame("upright", '[video]\nsize = "1080x1920"\ntitle = "chiplofi"\n'
                                    'text = ["8-bit lo-fi radio"]\n', work, half=True),
        ]
    for path in made:
        print(f"{path.relative_to(ROOT)}: {Image.open(path).size[0]}x{Image.open(path).size[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
