"""The audio thread: bars from the ring → render → effects → sanitise → the clock → every sink.

It renders a little ahead of the clock (`LEAD_SECONDS`), keeping the rendered audio as a queue of
pending segments with a marker where each bar starts; a block of `BLOCK_FRAMES` goes out when the
clock says it is due, and a bar becomes "now playing" when its first frame has gone out (that is
when a new track is logged, archived, and kept as the stream's position).

When the ring has no bar in time it plays a bar of the fallback bed (an underrun, counted), so the
stream is never silent; a bar the renderer chokes on is replaced by the bed too. NaN/Inf samples
are replaced and counted. A reload's new renderer or effects are swapped in on a bar boundary: the
old renderer's release tails are mixed into the first new bar, and the effects chain is retuned,
not replaced (see streamer.effects_swap).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamer.archive import TrackRecorder
from streamer.clock import SampleClock
from streamer.composer import Bridge
from streamer.config import Config, EffectsSettings, RenderSettings
from streamer.effects_swap import retune_chain
from streamer.fallback import FallbackBed, FallbackSource
from streamer.position import PositionKeeper
from streamer.ringbuffer import AudioBlock, BarEntry, BarRing
from streamer.schedule import Schedule
from streamer.sinks import Sink
from streamer.status_snapshot import Counters
from streamer.track_titles import track_title
from streamer.types import VOICES, Bar
from streamer.video import NowPlayingFile, now_playing_details
from streamer.wavfile import to_pcm16

log = logging.getLogger(__name__)

BLOCK_FRAMES = 1024  # ≈ 23 ms at 44.1 kHz: the clock's step
LEAD_SECONDS = 0.5  # rendered audio kept ahead of the clock
MIN_LEAD_SECONDS = 0.12  # below this, a missing bar is an underrun: the fallback bed plays
UNPACED_BAR_WAIT_SECONDS = 5.0  # unpaced, the composer sets the pace; wait this long before falling back
RENDER_TAIL_SECONDS = 0.4  # release tails of the old renderer, mixed in on a SoundFont swap
RECENT_BARS = 4  # bars that played, kept for /bars


class Renderer(Protocol):
    """Bars to PCM (streamer.render.BarRenderer; tests use a double)."""

    sample_rate: int

    def render_bar(self, bar: Bar) -> np.ndarray: ...  # (frames, 2) float32, the bar's length

    def render_tail(self, seconds: float) -> np.ndarray: ...  # (frames, 2): what still rings

    def reset(self) -> None: ...

    def close(self) -> None: ...


class Effects(Protocol):
    """Stateful processing of consecutive blocks (streamer.effects.EffectsChain; tests use a double)."""

    def process(self, block: np.ndarray) -> np.ndarray: ...  # (frames, 2) → (frames, 2)


def fluidsynth_renderer(settings: RenderSettings, seed: int, stems: bool) -> Renderer:
    """The renderer the daemon builds by default (its `renderer_factory`)."""
    from streamer.render import BarRenderer  # FluidSynth loads when the daemon starts, not on import

    return BarRenderer(settings, seed=seed, stems=stems)


def effects_chain(settings: EffectsSettings, sample_rate: int, seed: int) -> Effects:
    """The effects the daemon builds by default (its `effects_factory`)."""
    from streamer.effects import EffectsChain

    return EffectsChain.from_settings(settings, sample_rate, seed)


@dataclass
class RenderSwap:
    """A reload's validated renderer and effects (None: that part's settings did not change)."""

    renderer: Renderer | None
    effects: Effects | None
    config: Config


@dataclass
class Segment:
    pcm: np.ndarray  # (frames, 2) float32
    start_frame: int
    stems: np.ndarray | None = None  # (frames, voices) float32, when the video draws one scope per voice


@dataclass
class Marker:
    start_frame: int
    entry: BarEntry
    fallback: bool


class AudioThread:
    """Runs `run()` on the audio thread. The daemon sets `renderer` and `effects` (built here, with
    the factories given) and, with a video output, `stems` and the now-playing files, with the
    archive, `track_recorder`, before it starts."""

    def __init__(self, config: Config, *, clock: SampleClock, ring: BarRing, sinks: list[Sink],
                 schedule: Schedule, counters: Counters, position: PositionKeeper, seed: int,
                 stop: threading.Event, request_stop: Callable[[str], None],
                 composer_failing: Callable[[], bool], duration: float | None = None,
                 renderer_factory: Callable[[RenderSettings, int, bool], Renderer] = fluidsynth_renderer,
                 effects_factory: Callable[[EffectsSettings, int, int], Effects] = effects_chain) -> None:
        self.config = config  # the settings rendering now: a reload swaps [render] and [effects]
        self.sample_rate = config.render.sample_rate
        self.clock, self.ring, self.sinks, self.schedule = clock, ring, sinks, schedule
        self.counters, self.position, self.seed = counters, position, seed
        self._stop, self._request_stop, self._composer_failing = stop, request_stop, composer_failing
        self.duration = duration
        self.duration_reached = False
        self._renderer_factory, self._effects_factory = renderer_factory, effects_factory
        self.renderer: Renderer | None = None
        self.effects: Effects | None = None
        self.stems = False  # the renderer also makes one stem per voice (the video's scopes)
        self.track_recorder: TrackRecorder | None = None  # collects what plays into tracks
        self.now_title_file: NowPlayingFile | None = None  # the track's title, on the video
        self.now_playing_file: NowPlayingFile | None = None  # the details line under the title
        self._swap_lock = threading.Lock()
        self._next_render: RenderSwap | None = None
        self.bars = FallbackSource(ring.get, FallbackBed(seed), counters)  # never silent: the bed covers
        self._segments: deque[Segment] = deque()
        self.pending_frames = 0  # rendered, not yet released to the sinks
        self._produced_frames = 0
        self.markers: deque[Marker] = deque()  # bars rendered, not yet playing
        self._tail: np.ndarray | None = None
        self.playing: Marker | None = None
        self.recent: deque[Marker] = deque(maxlen=RECENT_BARS)

    def build_renderer(self, config: Config) -> Renderer:
        """A renderer for `config`'s [render] (at the start; a reload's, to validate and swap in)."""
        return self._renderer_factory(config.render, self.seed, self.stems)

    def build_effects(self, config: Config) -> Effects:
        return self._effects_factory(config.effects, self.sample_rate, self.seed)

    @property
    def pending_seconds(self) -> float:
        return self.pending_frames / self.sample_rate

    def clock_advancing(self) -> bool:
        """Has the clock released a block lately (a few blocks' time; unpaced, a bar's wait)?"""
        clock = self.clock
        window = (max(2.0, 4 * BLOCK_FRAMES / self.sample_rate / max(clock.speed, 1e-9)) if clock.paced
                  else UNPACED_BAR_WAIT_SECONDS + 1.0)
        return clock.advancing(window)

    def offer_render_swap(self, swap: RenderSwap) -> None:
        """Reload thread: swap `swap` in at the next bar (a later offer replaces one not yet taken)."""
        with self._swap_lock:
            self._next_render = swap

    def run(self) -> None:
        lead = int(LEAD_SECONDS * self.sample_rate)
        min_lead = int(MIN_LEAD_SECONDS * self.sample_rate)
        paced = self.clock.paced
        # Unpaced, a sink's full queue is waited for, not dropped: as long as a write to ffmpeg may
        # block before ffmpeg is restarted (a loaded machine can keep a starting ffmpeg from
        # reading for over a second: the soak saw 2048 frames dropped with 1 s).
        submit_timeout = 0.0 if paced else self.config.sinks.write_timeout_seconds
        self.clock.start()
        while not self._stop.is_set():
            if self.pending_frames < lead:
                if paced:
                    timeout = min(0.05, max(0.0, (self.pending_frames - min_lead) / self.sample_rate))
                else:  # unpaced, a working composer sets the pace; a failing one is not waited for
                    timeout = 0.0 if self._composer_failing() else UNPACED_BAR_WAIT_SECONDS
                found = self.bars.next(timeout, due=self.pending_frames < min_lead)
                if found is not None:
                    self._produce(*found)
                    continue
            block = self._take_block(BLOCK_FRAMES)
            if not self.clock.wait_due(block.start_frame, self._stop):
                break
            for sink in self.sinks:
                sink.submit(block, submit_timeout)
            self.clock.advance(block.frames)
            self._advance_now_playing(self.clock.frames)
            if self.duration is not None and self.clock.position_seconds >= self.duration:
                self.duration_reached = True
                self._request_stop(f"{self.duration:g} s of audio played")

    def _apply_render_swap(self) -> None:
        with self._swap_lock:
            swap, self._next_render = self._next_render, None
        if swap is None:
            return
        if swap.renderer is not None:
            old_renderer = self.renderer
            assert old_renderer is not None
            self._tail = old_renderer.render_tail(RENDER_TAIL_SECONDS)
            old_renderer.close()
            self.renderer = swap.renderer
        if swap.effects is not None:
            # Retuned rather than replaced: the unchanged stages keep their state (the loudness
            # follower's gain, the filters' memory, the NaN counter) and the changed ones
            # crossfade, as when a mood changes the effects.
            running = self.schedule.settings_of(self.effects, self.config.effects)
            self.effects = retune_chain(self.effects, running, swap.config.effects, self.sample_rate, self.seed,
                                        fresh=swap.effects)
        self.config = dataclasses.replace(self.config, render=swap.config.render, effects=swap.config.effects)
        log.info("SoundFont / effects settings swapped on a bar boundary")

    def _produce(self, entry: BarEntry, fallback: bool) -> None:
        """Render one bar (and its effects) onto the end of the pending audio."""
        self._apply_render_swap()
        self.effects = self.schedule.tune_effects(self.effects, self.config.effects, self.sample_rate, self.seed)
        renderer, bar = self.renderer, entry.bar
        assert renderer is not None and self.effects is not None
        try:
            pcm = renderer.render_bar(bar)
        except Exception as exc:  # a bar the renderer chokes on: count it, play the bed instead
            self.counters.render_errors += 1
            log.warning("cannot render bar %d of %s (%s); playing the fallback bed", bar.bar_index, bar.track_id, exc)
            if fallback:
                raise
            entry, fallback = self.bars.bed_bar(), True
            pcm = renderer.render_bar(entry.bar)
        self.bars.played(bar, fallback)
        if self._tail is not None:
            n = min(len(self._tail), len(pcm))
            pcm[:n] += self._tail[:n]
            self._tail = None
        stems = getattr(renderer, "last_stems", None) if self.stems else None
        pcm = self.effects.process(pcm)
        if not np.isfinite(pcm).all():
            bad = ~np.isfinite(pcm)
            self.counters.nonfinite_samples += int(bad.sum())
            pcm = np.where(bad, 0.0, pcm).astype(np.float32)
        pcm = np.clip(pcm, -1.0, 1.0).astype(np.float32, copy=False)
        self.markers.append(Marker(self._produced_frames, entry, fallback))
        self._segments.append(Segment(pcm, self._produced_frames, stems))
        self.pending_frames += len(pcm)
        self._produced_frames += len(pcm)

    def _take_block(self, frames: int) -> AudioBlock:
        start = self._produced_frames - self.pending_frames
        parts = []
        stem_parts = []
        need = frames
        while need > 0 and self._segments:
            segment = self._segments[0]
            offset = start + (frames - need) - segment.start_frame
            piece = segment.pcm[offset:offset + need]
            parts.append(piece)
            if self.stems:
                stem_parts.append(segment.stems[offset:offset + need] if segment.stems is not None
                                  else np.zeros((len(piece), len(VOICES)), dtype=np.float32))
            need -= len(piece)
            if offset + len(piece) >= len(segment.pcm):
                self._segments.popleft()
        if need > 0:  # the renderer fell behind (should not happen): pad, and count it
            self.counters.pcm_underruns += 1
            parts.append(np.zeros((need, 2), dtype=np.float32))
            stem_parts.append(np.zeros((need, len(VOICES)), dtype=np.float32))
        pcm = parts[0] if len(parts) == 1 else np.concatenate(parts)
        stems = (stem_parts[0] if len(stem_parts) == 1 else np.concatenate(stem_parts)) if self.stems else None
        self.pending_frames = max(0, self.pending_frames - (frames - need))
        return AudioBlock(pcm, to_pcm16(pcm), start, self.sample_rate, stems)

    def _advance_now_playing(self, played_frames: int) -> None:
        changed = False
        while self.markers and self.markers[0].start_frame < played_frames:
            marker = self.markers.popleft()
            if self.playing is not None:
                self.recent.append(self.playing)
            self.playing = marker
            self.counters.bars_played += 1
            bar = marker.entry.bar
            bridge = bar.track_id == Bridge.TRACK_ID  # the opening bridge is not a track
            if not marker.fallback and not bridge and bar.bar_index == 0:
                self.counters.tracks_started += 1
                # Logged as its first bar reaches the outputs: composing happens a buffer earlier.
                log.info("now playing: %s, %r, %s, %.0f BPM (%s)", bar.track_id, track_title(bar.track_id), bar.key,
                         bar.tempo_bpm, marker.entry.composer_id)
            if not marker.fallback and bar.track_number >= self.position.current.next_track:
                self.position.track_began(bar.track_number, bar.key, bar.tempo_bpm,
                                          dataclasses.asdict(self.schedule.composer_mood()))
            if self.track_recorder is not None:
                self.track_recorder.bar_started(marker.entry, marker.fallback or bridge,
                                                marker.start_frame / self.sample_rate)
            changed = True
        if changed and self.now_playing_file is not None and self.playing is not None:
            bar = self.playing.entry.bar
            self.now_playing_file.write(now_playing_details(bar.key, bar.tempo_bpm, bar.section))
            if self.now_title_file is not None:
                self.now_title_file.write(track_title(bar.track_id))
