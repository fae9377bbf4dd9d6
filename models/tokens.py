"""The bar as tokens: a 16-step grid (4/4), four voices, one token per step and voice.

- Pitched voices (lead, harmony, bass; `PITCHED_VOICES`): ``0`` = rest (`REST`), ``1`` = hold
  (`HOLD`: the note sounding at the previous step goes on), ``2 + i`` = onset of pitch
  ``PITCH_RANGES[voice][0] + i``. Each voice has ``N_PITCHES`` (36) pitches, so
  ``PITCHED_VOCAB`` = 38 tokens. Pitches outside a voice's range are folded by octaves into it.
  A voice is monophonic; a hold at step 0 continues the note from the previous bar.
- Drums: a bit mask of the hits at that step, ``DRUM_CLASSES`` order (kick = 1, snare = 2,
  closed hat = 4, open hat = 8, tom = 16), so ``DRUM_VOCAB`` = 32 tokens; 0 = no hit.

A bar is ``(16, 4)``, voices in `models.voices.VOICES` order. `transpose_tokens` moves bars;
`bar_notes` turns a bar's tokens back into notes ``(voice, pitch, start_step, length_steps,
velocity)``, the same note tuples the composer yields. `STYLES` names the style condition.
Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.voices import VOICES

PITCHED_VOICES: tuple[str, ...] = ("lead", "harmony", "bass")
STEPS_PER_BAR = 16
STEPS_PER_BEAT = 4
N_VOICES = 4
DRUMS = 3  # index of the drum voice

REST, HOLD, FIRST_PITCH_TOKEN = 0, 1, 2
N_PITCHES = 36
PITCH_RANGES: dict[str, tuple[int, int]] = {  # inclusive MIDI pitch ranges, 36 semitones each
    "lead": (55, 90),
    "harmony": (48, 83),
    "bass": (28, 63),
}
PITCHED_VOCAB = FIRST_PITCH_TOKEN + N_PITCHES
DRUM_CLASSES: tuple[str, ...] = ("kick", "snare", "closed_hat", "open_hat", "tom")
DRUM_VOCAB = 1 << len(DRUM_CLASSES)
VOCAB_SIZES: tuple[int, ...] = (PITCHED_VOCAB, PITCHED_VOCAB, PITCHED_VOCAB, DRUM_VOCAB)
# General MIDI drum keys written for each class when bars are turned back into notes.
DRUM_CLASS_KEYS: tuple[int, ...] = (36, 38, 42, 46, 45)

STYLES: tuple[str, ...] = ("lofi", "nes", "lakh")


def pitch_to_token(voice: int, pitch: int) -> int:
    """Onset token of `pitch` for pitched voice index `voice`, folded by octaves into range."""
    low, high = PITCH_RANGES[VOICES[voice]]
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return FIRST_PITCH_TOKEN + pitch - low


def token_to_pitch(voice: int, token: int) -> int:
    """MIDI pitch of an onset token (token >= 2) of pitched voice index `voice`."""
    return PITCH_RANGES[VOICES[voice]][0] + int(token) - FIRST_PITCH_TOKEN


def transpose_tokens(tokens: np.ndarray, semitones: int) -> np.ndarray:
    """Tokens `(..., 16, 4)` moved by `semitones`; onsets leaving a range fold back by an octave."""
    out = np.array(tokens, copy=True)
    if semitones == 0:
        return out
    for voice in range(len(PITCHED_VOICES)):
        column = out[..., voice]
        onset = column >= FIRST_PITCH_TOKEN
        index = column[onset].astype(np.int64) - FIRST_PITCH_TOKEN + semitones
        index = np.where(index < 0, index + 12, index)
        index = np.where(index >= N_PITCHES, index - 12, index)
        column[onset] = (index + FIRST_PITCH_TOKEN).astype(out.dtype)
    return out


def bar_notes(tokens: np.ndarray, next_tokens: np.ndarray | None = None,
              velocities: Sequence[int] = (92, 72, 96, 90)) -> list[tuple[str, int, int, int, int]]:
    """Notes `(voice, pitch, start_step, length_steps, velocity)` of one bar's tokens `(16, 4)`.

    A note still held at the bar's end is extended through the holds at the start of
    `next_tokens` (the following bar) when given. Holds with no onset before them are ignored.
    """
    notes: list[tuple[str, int, int, int, int]] = []
    for voice in range(len(PITCHED_VOICES)):
        column = tokens[:, voice]
        step = 0
        while step < STEPS_PER_BAR:
            token = int(column[step])
            if token >= FIRST_PITCH_TOKEN:
                end = step + 1
                while end < STEPS_PER_BAR and column[end] == HOLD:
                    end += 1
                length = end - step
                if end == STEPS_PER_BAR and next_tokens is not None:
                    following = next_tokens[:, voice]
                    k = 0
                    while k < STEPS_PER_BAR and following[k] == HOLD:
                        k += 1
                    length += k
                notes.append((VOICES[voice], token_to_pitch(voice, token), step, length, velocities[voice]))
                step = end
            else:
                step += 1
    for step in range(STEPS_PER_BAR):
        mask = int(tokens[step, DRUMS])
        for index, key in enumerate(DRUM_CLASS_KEYS):
            if mask & (1 << index):
                notes.append(("drums", key, step, 1, velocities[DRUMS]))
    return notes
