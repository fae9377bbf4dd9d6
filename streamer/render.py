"""Render bars to PCM with FluidSynth and chiplofi's own SoundFont (no audio driver).

The renderer keeps a sample-counting timeline: each bar starts at the sample where the previous
one ended (the fractional part is carried, so tempo never drifts), note-ons and note-offs are
scheduled at absolute sample positions, and note-offs that fall past a bar line stay pending, so
notes ringing over a bar line keep ringing and release tails are never cut.

FluidSynth applies events at its internal 64-frame block boundaries (an event sent with the
synth at frame t sounds from the next boundary at or after t). The renderer therefore sends each
event at the boundary nearest to its exact sample, so every note starts within ±32 frames
(±0.73 ms at 44.1 kHz) of its sample, half the error of sending it on time, and that error never
accumulates: the bar grid itself is exact.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
from pathlib import Path

import numpy as np

import soundfonts
from models.midi_lib import fluidsynth
from streamer.config import RenderSettings, VoiceSettings
from streamer.errors import RenderError, SoundFontError
from streamer.types import VOICES, Bar

log = logging.getLogger(__name__)

if fluidsynth is None:
    raise ImportError("pyfluidsynth could not load libfluidsynth; install it (Debian: apt-get install libfluidsynth3)")

# MIDI channel of each voice; drums on the General MIDI percussion channel.
VOICE_CHANNELS: dict[str, int] = {"lead": 0, "harmony": 1, "bass": 2, "drums": 9}

FLUID_INTERP_NONE = 0  # nearest neighbour: keeps the stepped NES waveforms stepped
CC_VOLUME, CC_PAN, CC_CHORUS_SEND = 7, 10, 93
FLUID_BLOCK_FRAMES = 64  # FluidSynth's internal block (FLUID_BUFSIZE): events apply at its edges
# The stem synth gives every MIDI channel up to the drums' its own audio group (group = channel % groups).
STEM_GROUPS = max(VOICE_CHANNELS.values()) + 1
# Stems are for drawing: each voice is brought to about STEM_PEAK by a gain that follows its peaks
# (a voice alone peaks anywhere from 0.03 to 0.2). The followed peak decays by STEM_PEAK_DECAY per
# render call (about a bar), and never counts below STEM_PEAK_FLOOR, so a silent voice stays flat.
STEM_PEAK, STEM_PEAK_DECAY, STEM_PEAK_FLOOR = 0.85, 0.7, 0.01

# pyfluidsynth only exposes 16-bit output; float output avoids int16 clipping and dither noise.
_write_float = fluidsynth.cfunc(
    "fluid_synth_write_float", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
    ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
    ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1))
# Multi-channel output (the per-voice stems): dry audio of audio group g goes to out[2g], out[2g + 1],
# added to what the buffers hold.
_process = fluidsynth.cfunc(
    "fluid_synth_process", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1), ("nfx", ctypes.c_int, 1),
    ("fx", ctypes.c_void_p, 1), ("nout", ctypes.c_int, 1), ("out", ctypes.c_void_p, 1))
_set_interp_method = fluidsynth.cfunc(
    "fluid_synth_set_interp_method", ctypes.c_int,
    ("synth", ctypes.c_void_p, 1), ("chan", ctypes.c_int, 1), ("interp_method", ctypes.c_int, 1))


def swing_position(beats: float, swing: float) -> float:
    """Move a position (in beats) so each 8th note's first 16th takes `swing` of the 8th.

    Piecewise linear inside each 8th: the on-beat and the 8th-note grid stay put, the off-beat
    16th moves from 0.25 to swing × 0.5 of the 8th (0.57 → 0.285). Works for any position, so
    note ends and notes past the bar line swing consistently.
    """
    eighth_start = np.floor(beats * 2.0) / 2.0
    within = beats - eighth_start  # 0 <= within < 0.5
    if within <= 0.25:
        moved = within * 2.0 * swing
    else:
        moved = 0.5 * swing + (within - 0.25) * 2.0 * (1.0 - swing)
    return float(eighth_start + moved)


def chorus_settings(settings: RenderSettings) -> dict[str, int | float]:
    """FluidSynth's stereo chorus, which the voices send to (CC 93, `VoiceSettings.chorus`).

    FluidSynth's chorus modulates its left and right outputs differently, so what goes through
    it is decorrelated between the channels: the lead and harmony get width (and a little
    movement) without a second synth or per-voice buffers, while a voice that sends nothing
    (bass, drums) stays exactly where its pan puts it.
    """
    sends = any(getattr(settings, voice).chorus > 0.0 for voice in VOICES)
    if not sends or settings.chorus_level <= 0.0:
        return {"synth.chorus.active": 0}
    return {"synth.chorus.active": 1, "synth.chorus.level": float(settings.chorus_level),
            "synth.chorus.depth": float(settings.chorus_depth_ms), "synth.chorus.speed": float(settings.chorus_rate_hz),
            "synth.chorus.nr": int(settings.chorus_voices)}


class BarRenderer:
    """Turns `Bar`s into stereo float32 PCM, bar after bar, with state carried between bars.

    With `stems=True`, a second synth is sent the very same events at the very same frames and
    writes each voice to its own buffer: after every `render_bar` / `render_tail`, `last_stems`
    holds the same frames as one mono channel per voice, (frames, len(VOICES)) float32, for the
    video's oscilloscopes. The main mix is made exactly as without stems.
    """

    def __init__(self, settings: RenderSettings, *, seed: int = 0, stems: bool = False) -> None:
        self.settings = settings
        self.sample_rate = settings.sample_rate
        self.seed = seed
        soundfont_path = Path(settings.soundfont) if settings.soundfont else soundfonts.SOUNDFONT_PATH
        if not soundfont_path.is_file():
            raise SoundFontError(f"{soundfont_path}: SoundFont not found")
        self.soundfont_path = soundfont_path
        self._synth = fluidsynth.Synth(
            gain=settings.gain, samplerate=float(self.sample_rate),
            **{"synth.reverb.active": 0, "synth.polyphony": 64, "synth.cpu-cores": 1, **chorus_settings(settings)})
        self._sfid = self._synth.sfload(str(soundfont_path))
        if self._sfid < 0:
            self._synth.delete()
            raise SoundFontError(f"{soundfont_path}: FluidSynth could not load this SoundFont")
        self._stem_synth: fluidsynth.Synth | None = None
        if stems:
            self._stem_synth = fluidsynth.Synth(
                gain=settings.gain, samplerate=float(self.sample_rate),
                **{"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.polyphony": 64,
                   "synth.cpu-cores": 1, "synth.audio-channels": STEM_GROUPS, "synth.audio-groups": STEM_GROUPS})
            if self._stem_synth.sfload(str(soundfont_path)) != self._sfid:
                self.close()
                raise SoundFontError(f"{soundfont_path}: FluidSynth could not load this SoundFont twice")
        self.last_stems: np.ndarray | None = None  # (frames, voices) float32 of the last render, with stems
        self._stem_peaks = np.full(len(VOICES), STEM_PEAK_FLOOR, dtype=np.float32)  # (voices,)
        self._pending_offs: list[tuple[int, int, int, int, int]] = []  # heap: (sample, seq, chan, key, note id)
        self._sounding: dict[tuple[int, int], int] = {}  # (chan, key) → id of the note holding it
        self._note_ids = itertools.count()
        self._synth_frames = 0  # frames FluidSynth has produced since it was created
        self.reset()

    def _setup_channel(self, voice: str, voice_settings: VoiceSettings) -> None:
        channel = VOICE_CHANNELS[voice]
        try:
            bank, program = soundfonts.PRESETS[voice_settings.preset]
        except KeyError as exc:
            raise RenderError(f"render.{voice}.preset: unknown preset {voice_settings.preset!r}") from exc
        for synth in self._synths():
            if synth.program_select(channel, self._sfid, bank, program) != 0:
                raise RenderError(f"{self.soundfont_path}: no preset {voice_settings.preset!r} "
                                  f"(bank {bank}, program {program})")
            _set_interp_method(synth.synth, channel, FLUID_INTERP_NONE)
            synth.cc(channel, CC_VOLUME, round(voice_settings.volume * 127))
            synth.cc(channel, CC_PAN, round((voice_settings.pan + 1.0) / 2.0 * 127))
            synth.cc(channel, CC_CHORUS_SEND, round(voice_settings.chorus * 127))

    def _synths(self) -> list[fluidsynth.Synth]:
        """The synths every event goes to: the main one, and the stem synth if there is one."""
        return [self._synth] if self._stem_synth is None else [self._synth, self._stem_synth]

    def reset(self) -> None:
        """Silence everything and start a fresh timeline (and humanisation sequence)."""
        for synth in self._synths():
            synth.system_reset()
        for voice in VOICES:
            self._setup_channel(voice, getattr(self.settings, voice))
        self._pending_offs.clear()
        self._sounding.clear()
        self._rng = np.random.default_rng(self.seed)
        self._timeline = 0.0  # exact (fractional) sample position of the next bar line
        self._rendered_frames = 0  # frames produced so far (== round of the last bar line)
        # Output frame p is FluidSynth frame p + this; FluidSynth's block edges are fixed in its frames.
        self._synth_offset = self._synth_frames

    @property
    def rendered_frames(self) -> int:
        return self._rendered_frames

    def _humanize(self, velocity: int) -> int:
        amount = self.settings.humanize_velocity
        change = self._rng.uniform(-amount, amount) if amount > 0 else 0.0
        return int(np.clip(round(velocity * (1.0 + change)), 1, 127))

    def _schedule(self, bar: Bar, bar_start: int) -> list[tuple[int, int, int, int, int]]:
        """Note-ons of `bar` as (sample, seq, channel, key, velocity), sorted; queues the note-offs."""
        samples_per_beat = 60.0 / bar.tempo_bpm * self.sample_rate
        ons = []
        for note in sorted(bar.notes, key=lambda n: (n.start, VOICE_CHANNELS[n.voice], n.pitch)):
            if note.voice not in VOICE_CHANNELS:
                raise RenderError(f"unknown voice {note.voice!r}; voices are {', '.join(VOICES)}")
            channel = VOICE_CHANNELS[note.voice]
            start_beat = swing_position(note.start, self.settings.swing)
            end_beat = swing_position(note.start + max(note.duration, 0.0), self.settings.swing)
            on_sample = bar_start + round(start_beat * samples_per_beat)
            off_sample = max(on_sample + 1, bar_start + round(end_beat * samples_per_beat))
            note_id = next(self._note_ids)
            velocity = self._humanize(note.velocity)
            ons.append((on_sample, note_id, channel, note.pitch, velocity))
            heapq.heappush(self._pending_offs, (off_sample, note_id, channel, note.pitch, note_id))
        return ons

    def _note_on(self, channel: int, key: int, velocity: int, note_id: int) -> None:
        retrigger = (channel, key) in self._sounding  # the earlier note's pending off is void
        self._sounding[(channel, key)] = note_id
        for synth in self._synths():
            if retrigger:
                synth.noteoff(channel, key)
            synth.noteon(channel, key, velocity)

    def _note_off(self, channel: int, key: int, note_id: int) -> None:
        if self._sounding.get((channel, key)) == note_id:
            del self._sounding[(channel, key)]
            for synth in self._synths():
                synth.noteoff(channel, key)

    def _event_frame(self, sample: int, position: int) -> int:
        """The output frame at which to send an event due at `sample`: the nearest block edge."""
        synth_frame = sample + self._synth_offset
        edge = (synth_frame + FLUID_BLOCK_FRAMES // 2) // FLUID_BLOCK_FRAMES * FLUID_BLOCK_FRAMES
        return max(edge - self._synth_offset, position)

    def _synthesize(self, frames: int, out: np.ndarray, offset: int, stems: np.ndarray | None) -> None:
        if frames <= 0:
            return
        self._synth_frames += frames
        view = out[offset:offset + frames]  # (frames, 2) float32, C-contiguous rows
        status = _write_float(self._synth.synth, frames, view.ctypes.data, 0, 2, view.ctypes.data, 1, 2)
        if status != 0:
            raise RenderError("FluidSynth failed to synthesize audio")
        if self._stem_synth is not None and stems is not None:
            buffers = np.zeros((2 * STEM_GROUPS, frames), dtype=np.float32)  # (L, R) per audio group
            pointers = (ctypes.c_void_p * len(buffers))(*[row.ctypes.data for row in buffers])
            if _process(self._stem_synth.synth, frames, 0, None, len(buffers), pointers) != 0:
                raise RenderError("FluidSynth failed to synthesize the voice stems")
            for index, voice in enumerate(VOICES):
                group = VOICE_CHANNELS[voice]
                # mono: the mean of the voice's left and right
                stems[offset:offset + frames, index] = (buffers[2 * group] + buffers[2 * group + 1]) * 0.5

    def _render_until(self, end_sample: int, ons: list[tuple[int, int, int, int, int]]) -> np.ndarray:
        """Render from the current position to `end_sample`, applying events at their samples."""
        start_sample = self._rendered_frames
        out = np.zeros((end_sample - start_sample, 2), dtype=np.float32)
        stems = np.zeros((len(out), len(VOICES)), dtype=np.float32) if self._stem_synth is not None else None
        position = start_sample
        on_index = 0
        while True:
            next_on = self._event_frame(ons[on_index][0], position) if on_index < len(ons) else None
            next_off = self._event_frame(self._pending_offs[0][0], position) if self._pending_offs else None
            candidates = [t for t in (next_on, next_off) if t is not None and t < end_sample]
            if not candidates:
                break
            event_frame = min(candidates)
            self._synthesize(event_frame - position, out, position - start_sample, stems)
            position = event_frame
            # Offs before ons at the same frame, so a repeated note is re-struck, not cut.
            while self._pending_offs and self._event_frame(self._pending_offs[0][0], position) <= position:
                _, _, channel, key, note_id = heapq.heappop(self._pending_offs)
                self._note_off(channel, key, note_id)
            while on_index < len(ons) and self._event_frame(ons[on_index][0], position) <= position:
                _, note_id, channel, key, velocity = ons[on_index]
                self._note_on(channel, key, velocity, note_id)
                on_index += 1
        self._synthesize(end_sample - position, out, position - start_sample, stems)
        self._rendered_frames = end_sample
        if stems is not None and len(stems):
            peaks = np.abs(stems).max(axis=0)  # (voices,)
            self._stem_peaks = np.maximum(np.maximum(peaks, self._stem_peaks * STEM_PEAK_DECAY), STEM_PEAK_FLOOR)
            stems *= STEM_PEAK / self._stem_peaks
            np.clip(stems, -1.0, 1.0, out=stems)
        self.last_stems = stems
        return out

    def render_bar(self, bar: Bar) -> np.ndarray:
        """PCM of one bar: (frames, 2) float32. Frames = this bar's share of the sample timeline."""
        if not bar.tempo_bpm > 0 or not bar.beats > 0:
            raise RenderError(f"bar {bar.bar_index} of track {bar.track_id!r}: tempo and length must "
                              f"be positive, got {bar.tempo_bpm} BPM, {bar.beats} beats")
        bar_start = self._rendered_frames
        self._timeline += bar.seconds * self.sample_rate
        bar_end = round(self._timeline)
        ons = self._schedule(bar, bar_start)
        return self._render_until(bar_end, ons)

    def render_tail(self, seconds: float) -> np.ndarray:
        """Release every note and render `seconds` more, so the last notes fade naturally."""
        end = self._rendered_frames + round(seconds * self.sample_rate)
        pending = sorted(self._pending_offs)
        self._pending_offs.clear()
        for _, _, channel, key, note_id in pending:
            self._note_off(channel, key, note_id)
        self._timeline = float(end)
        return self._render_until(end, [])

    def close(self) -> None:
        for synth in self._synths():
            synth.delete()
