"""The composer: an endless stream of bars, organised into tracks of 2–4 minutes.

Each track has a key and a tempo (70–92 BPM unless fixed), a form — intro, A, B, A′ (and for
longer tracks B′, C, A″), outro — and per section a four-bar chord loop with lo-fi colour
(diatonic 7ths and 9ths, more of them the more lo-fi the style blend). Chords and latents come
from the LSTM; each bar is decoded by the VAE in one pass. Sections that return (A′, A″) replay
their first phrase's latents and vary the rest, so phrases come back the way they do in songs.
The last bar of every section ends with a drum fill and the next section opens with a crash.
Consecutive tracks move to a related key and a nearby tempo, and each opens and closes quietly.

Everything random is drawn from numpy Generators seeded by (seed, track number), so the same
seed and controls give the same music; two tracks (or two seeds) are never the same.

    composer = Composer.from_checkpoint("models/checkpoints", Controls(seed=7))
    for bar in composer:          # ComposedBar, forever
        ...

Pitches are generated in C major / A minor (the models' key-normalised space) and moved to the
track's key at the end. A `ComposedBar` is plain data; the streamer adapts it to its own types.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models import checkpoint as ckpt
from models.errors import ModelError
from models.inference import FastDecoder, FastLSTM, FastState, sample_from_logits, sample_latent
from models.layout import CONTEXT_OFFSETS, N_ACTIVITY, N_CHORDS, TAIL_STEPS, chord_index, chord_parts
from models.theory import CHORD_INTERVALS, CHORD_QUALITIES, MAJOR, MINOR, chord_name, chord_tones, key_name, parse_key
from models.tokens import (
    DRUM_VOCAB,
    FIRST_PITCH_TOKEN,
    HOLD,
    PITCH_RANGES,
    PITCHED_VOCAB,
    REST,
    STEPS_PER_BAR,
    STYLES,
    token_to_pitch,
)
from models.voices import VOICES

if TYPE_CHECKING:
    from models.lstm import BarLSTM
    from models.vae import BarVAE

log = logging.getLogger(__name__)

Note = tuple[str, int, int, int, int]  # (voice, pitch, start_step, length_steps, velocity)

TEMPO_RANGE = (70.0, 92.0)
TRACK_SECONDS = (120.0, 240.0)
INTRO_BARS = OUTRO_BARS = 4
SECTION_BARS = 8
LOOP_BARS = 4

# Diatonic chords of C major (A minor shares them): root → (triad, seventh, ninth or None).
DIATONIC: dict[int, tuple[str, str, str | None]] = {
    0: ("maj", "maj7", "maj9"),
    2: ("min", "m7", "m9"),
    4: ("min", "m7", None),
    5: ("maj", "maj7", "maj9"),
    7: ("maj", "7", "9"),
    9: ("min", "m7", "m9"),
    11: ("dim", "m7b5", None),
}
SCALE_PCS = frozenset((0, 2, 4, 5, 7, 9, 11))  # C major / A natural minor
# A track's scale colour (normalised key), by mode: name → (scale, chord changes (root, quality
# → quality)). The melody takes the colour wherever the chord allows it; the one chord that
# carries the mode's sound changes with it (dorian's major IV, mixolydian's minor v, ...).
MODES: dict[int, dict[str, tuple[frozenset[int], dict[tuple[int, str], str]]]] = {
    MAJOR: {
        "ionian": (SCALE_PCS, {}),
        "mixolydian": (frozenset((0, 2, 4, 5, 7, 9, 10)), {(7, "maj"): "min", (7, "7"): "m7", (7, "9"): "m9"}),
        "lydian": (frozenset((0, 2, 4, 6, 7, 9, 11)), {(2, "min"): "maj", (2, "m7"): "7", (2, "m9"): "9"}),
    },
    MINOR: {
        "aeolian": (SCALE_PCS, {}),
        "dorian": (frozenset((9, 11, 0, 2, 4, 6, 7)), {(2, "min"): "maj", (2, "m7"): "7", (2, "m9"): "9"}),
        "harmonic": (frozenset((9, 11, 0, 2, 4, 5, 8)), {(4, "min"): "7", (4, "m7"): "7"}),
        "phrygian": (frozenset((9, 10, 0, 2, 4, 5, 7)), {}),
    },
}
MODE_WEIGHTS = {MAJOR: (0.5, 0.3, 0.2), MINOR: (0.4, 0.3, 0.2, 0.1)}
TONIC_ROOT = {MAJOR: 0, MINOR: 9}
# Chords from outside the key that lo-fi and game music use, per mode of the normalised key:
# (root, quality) → the root it resolves to, a fifth below (secondary dominants, the major V7 of
# minor), or None for a borrowed colour that goes anywhere (iv, bVI, bVII in major; IV in minor).
# The LSTM's chord head decides how often they come; the composer only makes dominants resolve.
CHROMATIC: dict[int, dict[tuple[int, str], int | None]] = {
    MAJOR: {(2, "7"): 7, (9, "7"): 2, (4, "7"): 9, (11, "7"): 4, (0, "7"): 5, (2, "maj"): 7, (4, "maj"): 9,
            (5, "min"): None, (5, "m7"): None, (10, "maj"): None, (10, "7"): None, (8, "maj"): None,
            (8, "maj7"): None, (3, "maj"): None, (3, "maj7"): None},
    MINOR: {(4, "7"): 9, (4, "maj"): 9, (9, "7"): 2, (11, "7"): 4, (0, "7"): 5, (2, "maj"): None, (2, "7"): 7,
            (10, "maj"): None, (10, "maj7"): None, (9, "maj"): None, (6, "m7b5"): None},
}
# Logits added to the chromatic chords (borrowed, dominant): the LSTM learned them from estimated
# chord labels, where a borrowed chord is often read as a diatonic neighbour; this brings them to
# about the data's own share (lo-fi ~0.24, NES ~0.36 of chord changes), most of them borrowed
# colours, as in the data, where few chromatic chords move a fifth down: secondary dominants get
# no boost (at 0.5 NES resolved 0.27-0.30 of its chromatic chords a fifth down; the data 0.13).
# The style-balanced LSTM (models/README.md) proposes fewer borrowed chords than the one before it
# (at 2.25 the blend's non-diatonic share fell to 0.21, the data's 0.35): 2.75.
CHROMATIC_BOOST = {"borrowed": 2.75, "dominant": 0.0}

# Section energy before the energy control moves it; the activity level 0..3 follows from it.
SECTION_ENERGY = {"intro": 0.3, "A": 0.5, "B": 0.7, "A'": 0.6, "B'": 0.75, "C": 0.65, "A''": 0.6, "outro": 0.3}
BASE_VELOCITY = {"lead": 88, "harmony": 64, "bass": 92, "drums": 84}

# Drum fills over the last steps of a section's last bar: (step, GM key).
FILLS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((12, 38), (13, 38), (14, 38), (15, 38)),
    ((8, 50), (10, 50), (12, 47), (13, 47), (14, 45), (15, 43)),
    ((10, 38), (12, 38), (14, 45), (15, 43)),
    ((12, 38), (14, 38), (15, 38), (15, 36)),
    ((8, 38), (11, 38), (12, 47), (14, 45), (15, 41)),
)
CRASH = 49
# How a track opens: the voices muted in the intro's first two bars (the rest enter after).
INTROS: dict[str, tuple[str, ...]] = {"full": (), "keys": ("bass", "drums"), "beat": ("lead", "harmony"),
                                      "keys-and-bass": ("lead", "drums")}
# Lo-fi harmony rhythms (start step, length): sustained strikes, sometimes pushed ahead of beat 3.
COMP_PATTERNS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 16),), ((0, 14),), ((0, 12),), ((0, 8), (8, 8)), ((0, 6), (6, 10)), ((0, 10), (10, 6)),
)
COMP_WEIGHTS = np.array([0.15, 0.1, 0.1, 0.25, 0.2, 0.2])  # one or two long chords a bar
# Lo-fi harmony strikes on the downbeat, then where the decoded harmony (the LSTM's latent,
# decoded) starts a note at least COMP_GAP steps (half a bar) after the last strike, so one or two
# a bar, each sounding at most COMP_HOLD steps (in a sustained section: until the next strike): the
# model chooses the comping rhythm bar by bar, and the patterns above stand in only under a silent
# decoded harmony. The lo-fi loops' top accompanying line plays 1.8 notes a bar of 1.25 beats (held
# out; training loops 2.7 of 0.94); held to the next strike ours played 1.5 of 2.6 beats, and the
# style's mean note length went over the loops' by more than 30 %.
COMP_GAP = 8
COMP_HOLD = 6
# Lo-fi sections come in two feels, drawn per section letter: rhythmic (chord stabs of at most
# COMP_HOLD steps, bass on LOFI_BASS_STEPS) or, with the chance SUSTAIN_SHARE, sustained (each
# chord held until the next strike, the whole bar after a single one; the bass struck on
# SUSTAIN_BASS_STEPS only). The held-out loops are of both kinds: per 4-bar segment 35 % of their
# notes last an eighth and 25 % a whole bar, with a spread of 0.33 and 0.40 between segments (some
# loops are pads, some play), where every section of ours stabbed half-bar chords (47 % of notes
# at 7-8 steps, 5 % whole bars). Sustained sections came in with stabs of 6 steps (COMP_HOLD was
# 8) and a shorter ring (LOFI_RING was (2, 4)), so that the mean note length stays near the
# loops': `chiplofi eval`, lo-fi, 60 min, seeds 0-4, share 0 → 0.6: mean distance-overlap 0.668
# → 0.720, value-overlap 0.551 → 0.591, over N(0,1) latents +0.104 → +0.116 (lowest seed +0.084
# → +0.112), mean note length 1.58 → 1.54 beats (loops 1.28).
SUSTAIN_SHARE = 0.6
SUSTAIN_BASS_STEPS = (0,)
# Logits taken from the lead's last pitch, lo-fi → NES: a melody moves; holding is still free (NES
# leads repeat a note in 17-25 % of their moves, the lo-fi loops in 4-9 %: at 3.0 NES came out at 7 %;
# with its chromatic neighbours and the lead's kept onset share below, NES at 1.5 came out at 11 %).
REPEAT_PENALTY = (3.0, 1.0)
RECENT_PENALTY = 0.9  # ... and per recent use of a pitch (the last onsets), so a phrase ranges wider
RECENT_WINDOW = (8, 16)  # onsets the lead remembers, lo-fi → NES (a bar or two of its notes)
# Logits the lead loses per semitone a move goes beyond LEAP_FREE, lo-fi → NES. NES leads move by
# step and skip: a leap of 8 semitones or more is 5.7 % of real NES lead moves held out (7.1 % in
# training), ours 11.8 % (20 % from one bar into the next), and the mean move 3.5 semitones against
# 2.7. At 0.4: 5.8 %, mean 3.0. `chiplofi eval`, NES, 60 min, seeds 0-4: lead-interval overlap 0.82 /
# 0.60 → 0.84 / 0.70; mean distance- / value-overlap 0.812 / 0.666 → 0.819 / 0.683, over N(0,1)
# latents +0.149 → +0.153 (lowest seed +0.110 → +0.120). 0.8, or 0.4 beyond 5, gave less (0.815 /
# 0.682, 0.814 / 0.684). In lo-fi too (0.4) the value-overlap stayed and its lead over N(0,1)
# latents fell (+0.116 → +0.109): the loops' few notes leap more (10 % in training).
LEAP_FREE = 7
LEAP_COST = (0.0, 0.4)
# Share of the lead's onset probability the costs and leans above may take away, lo-fi → NES. They
# are there to choose *which* pitch the lead plays; taking probability from every pitch at once they
# also made it play less often: the NES lead played 3.9 notes a bar (real NES 7.1 held out, 8.1 in
# training), half its bars 1-3 notes (real 8-16 %). In NES the decoder's chance of an onset at a step
# is kept (the pitch logits shifted back to their log-sum-exp before the costs); lo-fi keeps the
# loss, which suits the loops' sparse top line (2.2 notes a bar; ours 2.3). NES lead 3.9 → 5.5 notes
# a bar (6.3 with the chromatic neighbours below, real 7.1). With those, `chiplofi eval`, NES, 60 min,
# seeds 0-4 (before ARPEGGIO_SPAN and BASS_HOME below moved): value-overlap
# 0.627 → 0.661 (pitch-class histogram 0.59 → 0.72, transitions 0.62 → 0.78), distance-overlap
# 0.816 → 0.808, over N(0,1) latents +0.138 → +0.139 (lowest seed +0.123 → +0.101).
LEAD_ONSET_KEPT = (0.0, 1.0)
# NES leads pass through notes off the scale: 15 % of real NES lead notes (held out and training)
# are, and 8-13 % of their moves are a semitone either way. `_clean` moved every off-scale onset onto
# the scale, so ours moved by a semitone in 3 % of moves and repeated a note instead. From NES style
# on (style blend ≥ 0.5; the lo-fi loops' top line has 0-4 % off the scale) an off-scale lead note
# off the beat stays when the lead note before or after it in the bar is a scale tone a semitone
# away: a chromatic neighbour or passing tone. Semitone moves 3 % → 9 % each way; off the scale 14 %
# → 19 %. `chiplofi eval`, NES, 60 min, seeds 0-4, alone: value-overlap 0.627 → 0.643.
CHROMATIC_LEAD_FROM = 0.5
LOFI_ACTIVITY_DROP = 1.5  # activity levels lo-fi plays below the section's energy (fewer, longer notes)
# Activity levels a track's density (-1, 0, +1, drawn per track) moves its bars, lo-fi → NES. The
# lo-fi loops come sparse and busy: per 4-bar segment the 110 training loops play 6.6 pitched notes a
# bar with a spread of 3.7 (q10 2.3, q90 13), where ours, with half a level per track, played 5.1 with
# a spread of 1.4 (q10 3.5, q90 7): every track one texture. Two levels: the sparse third of tracks
# plays at level 0 throughout, the busy third at 2-3 (its sections still rise and fall), the others as
# before. `chiplofi eval`, lo-fi, 60 min, seeds 0-4: mean distance- / value-overlap 0.720 / 0.591 →
# 0.734 / 0.600, over N(0,1) latents +0.116 → +0.124 (lowest seed +0.112 → +0.100); the same music
# against the training loops instead of the 9 held out: 0.710 / 0.603 → 0.741 / 0.644, over N(0,1)
# latents +0.069 → +0.094 (lowest +0.051 → +0.077); the blend (0.3, at 1.55 levels) 0.576 / 0.418 →
# 0.604 / 0.440, distinct lead pitches per 4 bars 6.3 → 6.5. At 3.0: 0.738 / 0.606 (training loops
# 0.748 / 0.656), but a busy track then plays at level 3 from intro to outro.
DENSITY_STEP = (2.0, 0.5)
# Lo-fi bass onsets: beats 1 and 3 (the lo-fi loops' bass plays 1.0-1.4 notes a bar; with the push
# before 3 ours played 2.1, and the style's notes per bar ran 35 % over the loops').
LOFI_BASS_STEPS = (0, 8)
# Steps lead and bass notes ring on into a rest in lo-fi (bass: two steps; two beats, before the
# sustained sections, made the style's mean note length 1.70 beats against the loops' 1.28). The
# lead's step keeps its notes from being plucks (the loops' top line: 0.74 beats; with no ring
# ours were 0.59); at 2 the style's mean note length came within 0.04 of the loops' +30 %.
LOFI_RING = (1, 2)
# Motif memory: the decoder leaves the lead silent in about a third of the bars its latents ask for
# (lo-fi loops and pop have bars without melody), where one held chord tone used to stand in (55 %
# of lo-fi bars had one lead note). Now, with the chance MOTIF_FILL (lo-fi → NES: lo-fi keeps some
# bars of space), the bar takes up one of the track's last MOTIF_MEMORY decoded lead bars (those
# with at least MOTIF_MIN_ONSETS onsets) on its own chord, a nearer one likelier (weight
# MOTIF_RECENCY per bar back). When it came in (`chiplofi eval`, 60 min per style, seeds 0 and
# 1), distinct lead pitches per 4 bars without → with: NES 6.9-8.3 → 7.8-7.9, blend 5.7-6.7 →
# 6.9-7.2 (with BEAT_STEPS, seed 0: NES 8.0, blend 6.8).
MOTIF_FILL = (0.5, 1.0)
# Lead notes a bar below which the decoder is asked once more, a level livelier, lo-fi → NES (the
# blend's 0.3 rounds to 2; lo-fi keeps the loops' single held notes). With it (`chiplofi eval`,
# seeds 0-2): NES distinct lead pitches per 4 bars 7.1-8.0 → 7.6-8.2, the NES LSTM-over-noise gap
# +0.08-0.16 → +0.10-0.17, blend distinct lead pitches 5.9-6.4 → 6.1-6.4; network time per bar
# 0.42 → 0.50 ms (`bench/bench_model.py`: a second decoder pass in many NES bars).
LEAD_MIN_ONSETS = (1.0, 3.0)
MOTIF_MEMORY = 8
MOTIF_MIN_ONSETS = 2
MOTIF_RECENCY = 0.7
# Steps where a lead onset is a chord tone: the beats. The harmony sustains the chord under the
# lead, and the livelier leads of motif memory made lead-against-harmony pairs 0.74 consonant
# (0.77 before; consonance of all simultaneous pairs 0.78, goal 0.80, real 0.83): on the beats
# 0.81-0.83 (`chiplofi eval`, seeds 0 and 1). Off the beats passing and neighbour notes stay.
BEAT_STEPS = (0, 4, 8, 12)
# Bars whose bass starts on the chord root, else on another chord tone (an inversion, a walk):
# about the training data's own share, lo-fi ~0.63 and NES ~0.41 (chords estimated per bar), set a
# little below it because the lead and the arrangement add roots the figure also counts (measured
# 0.56 and 0.35, `chiplofi eval`), and so that the blend, judged against lo-fi and NES songs together (0.43, most
# of those bars are NES), lands within 0.10 of them too. NES 0.34 → 0.38 when the NES lead came to keep its
# onsets (LEAD_ONSET_KEPT): measured 0.33 over seeds 0-4 (0.31-0.35), now 0.36-0.39.
ROOT_SHARE = (0.56, 0.38)  # lo-fi, NES
# Semitones a NES arpeggio sweeps below / above the decoded note. Real NES leads sound above the
# second pulse in 62-66 % of steps; with sweeps 5 above, ours did in 46 % (lead and harmony both
# near MIDI 72). Below only, `chiplofi eval`, NES, 60 min, seeds 0-4: 0.68; mean distance- /
# value-overlap 0.806 / 0.659 → 0.809 / 0.658, over N(0,1) latents +0.141 → +0.144 (lowest seed
# +0.101 → +0.109).
ARPEGGIO_SPAN = (12, 0)
# Share of NES tracks whose triangle bounces a hammered note between octaves. In every track it
# spread our bass over a median 22 semitones per 4 bars against real NES's 10 (train and held
# out); in some it is the idiom it is. `chiplofi eval`, NES, 60 min, seeds 0-4, share 1 → 0.3:
# mean distance-overlap 0.797 → 0.816, value-overlap 0.619 → 0.627, over N(0,1) latents +0.126
# → +0.138 (lowest seed +0.113 → +0.123); bass range per 4 bars 22 → 17.
BOUNCE_SHARE = 0.3
# Share of NES tracks (at style 1.0; fewer toward 0.5, none at 0.5 or below) that leave the noise
# channel silent. Real NES music here mostly plays without it: 95 % of the training games' 4-bar segments
# and all of the held-out ones have no drum onset (the data's README: "channel 9, noise, is rare"),
# where every track of ours had a beat, so the drum-onset feature, a tenth of each mean overlap,
# was 0.17 / 0.00 (distance / value) against held-out NES. A track without drums plays the pitched
# notes it would play with them (only the noise channel is dropped; a "beat" intro, which would
# leave the bass alone, opens with harmony and bass instead), and its place in the share is drawn
# apart from its other choices (`_drum_draw`), so the rest of its music for a seed is as it was.
# Lo-fi keeps its beat: the loops have no drums either, but they are chord loops made to be
# played over one. `bench/bench_music.py`, NES, 60 min, seeds 0-4, share 0 → 0.5: mean distance- /
# value-overlap 0.831 / 0.722 → 0.906 / 0.745 (against the training games 0.785 / 0.658 → 0.858 /
# 0.696), over N(0,1) latents +0.139 → +0.133 (lowest seed +0.115 → +0.110: noise gains as much
# on the drum feature, and more on rhythm entropy, which counts drum onsets); the drum figures,
# over the drummed tracks, stay (seed 0: variety 0.20 → 0.21, fills at section ends 0.68 → 0.67).
NES_DRUMLESS_SHARE = 0.5
GOLDEN_FRACTION = (5 ** 0.5 - 1) / 2  # the step between tracks' places in the drumless share
# A NES lead note that starts on a beat rings this many steps into a rest. Real NES leads: 68-76 % of
# notes one step long, 14-24 % two, mean 1.53-1.57 steps; ours (with the kept onset chance) 83 %, 12 %,
# 1.24, and the note-length overlap fell. Every note ringing a step overshot (35 % / 53 %, 1.83);
# notes on the beat: 64 % / 28 %, 1.51. `chiplofi eval`, NES, 60 min, seeds 0-4: note-length overlap
# 0.89 / 0.69 → 0.91 / 0.75; mean distance- / value-overlap 0.811 / 0.668 → 0.812 / 0.666, over
# N(0,1) latents +0.145 → +0.149 (lowest seed +0.113 → +0.110).
NES_LEAD_RING = 1
# Where the bass sits, lo-fi → NES (MIDI; it moves to the chord tone nearest its last note, pulled
# back towards home by BASS_PULL per semitone away): the lo-fi loops' bass is the piano's left hand
# (median MIDI 48-50, ours was 41), NES's triangle lower. The NES bass sits low (at home 40: mean
# MIDI 51, lowest note per 4 bars 41; real NES 51-54 and 46-48; our 4-bar segments span 40
# semitones, real 33-35). Home 40 → 46 moves the bar's first bass note up; the decoded line after
# it mostly keeps its register (segments span 39.5, seed 0), but `chiplofi eval`, NES, 60 min,
# seeds 0-4: pitch-range overlap 0.87 / 0.57 → 0.91 / 0.64; mean distance- / value-overlap 0.809 /
# 0.658 → 0.811 / 0.668, over N(0,1) latents +0.144 → +0.145 (lowest seed +0.109 → +0.113);
# home 50 gave less (0.813 / 0.663, +0.138).
BASS_HOME = (48.0, 46.0)
BASS_PULL = 0.5
# The lead's register, lo-fi → NES (MIDI): NES melodies sit high (real NES leads: mean MIDI 71-75);
# the lo-fi loops' top line has a median of 72-74 (at 66 ours had 69).
LEAD_CENTRE = (69.0, 72.0)
# Bass notes below this move up by octaves, lo-fi → NES (MIDI): under A1 (55 Hz) small speakers drop
# them. The NES triangle sat low: the lowest bass note of a 4-bar segment was MIDI 41.8 on average
# against real NES's 45.7 (training) and 48.5 (held out), and our segments spanned 39 semitones
# (real 32.5-35). At 43 (G2): lowest 44.6, span 36.2. `chiplofi eval`, NES, 60 min, seeds 0-4:
# pitch-range overlap 0.92 / 0.65 → 0.94 / 0.89; mean distance- / value-overlap 0.819 / 0.683 →
# 0.821 / 0.704. N(0,1) latents, whose bass sits lower still, gain more: the LSTM's lead over them
# +0.153 → +0.124 (lowest seed +0.120 → +0.094). At 40: 0.820 / 0.693, +0.132 (lowest +0.098).
BASS_FLOOR = (33.0, 43.0)
# A NES second-pulse note held at least this many steps that sounds above the lead at most of them
# moves down an octave (where the pulse's range allows): a long note over the tune covers it. The
# second pulse sounded above the lead in 31.5 % of the steps both play, 4.9 % with a note of half a
# bar or more (real NES: 24-25 %, 0.9-3.4 %); now 25.1 % and 1.2 % (seed 0, 30 min). `chiplofi eval`,
# NES, 60 min, seeds 0-4: lead above the harmony 0.61 → 0.65 of steps (real 0.62-0.66); mean
# distance- / value-overlap 0.830 / 0.722 → 0.831 / 0.722, over N(0,1) latents +0.142 → +0.139
# (lowest seed +0.115 both).
HARMONY_UNDER_LEAD_STEPS = 8
LATENT_SOURCES = ("lstm", "noise")
# How far a bar's latent strays from the LSTM's mean (scale of its predicted spread, times the
# temperature control), lo-fi → NES: NES bars drawn near the mean keep the dense 16th-note runs and
# high register the LSTM predicts for the style, where wider draws fall back to the average bar;
# lo-fi bars near it keep the loops' few pitches (value-overlap with the held-out loops at 0.3 /
# 0.45 / 0.6 / 0.8, seeds 0-2: 0.52-0.55 / 0.52-0.55 / 0.52-0.55 / 0.52; over noise-z +0.08-0.10
# / +0.09-0.12 / +0.08-0.10 / +0.07-0.10). NES was held at 0.35; with its lead's kept onsets, leap
# cost and the bass floor (so many rules later) wider draws now suit it better: `chiplofi eval`, NES,
# 60 min, seeds 0-4, 0.30 / 0.35 / 0.40 / 0.45 / 0.50: mean value-overlap 0.690 / 0.704 / 0.711 /
# 0.722 / 0.723, over N(0,1) latents +0.110 / +0.124 / +0.131 / +0.142 / +0.143 (lowest seed +0.073 /
# +0.094 / +0.094 / +0.115 / +0.124), distance-overlap 0.811 / 0.821 / 0.829 / 0.830 / 0.833 (note
# lengths 0.70 → 0.86, inter-onset intervals 0.73 → 0.85); track-to-track cosine 0.50 → 0.54
# (goal ≤ 0.55: one seed over it at 0.45, two at 0.50).
LATENT_SPREAD = (0.45, 0.45)
# σ of a per-track bias (N(0, σ²) per chord) on the LSTM's chord logits: each track leans to its own
# chords, as real pieces do (`chiplofi eval`, track-to-track pitch-class-transition cosine: NES 0.57 → 0.43
# at σ 1.0; σ 2.0 with TRACK_PITCH_LEAN, 60 min per style, seed 0: lo-fi 0.60 → 0.53, NES 0.52 → 0.53).
# The style-balanced LSTM's chords are more alike between tracks (σ 2.0, seed 0: lo-fi 0.57, blend
# 0.60): σ 2.5, with the lead's lean below (seeds 0-2: lo-fi 0.50-0.55, NES 0.47-0.51).
TRACK_CHORD_BIAS = 2.5
# σ of a per-track lean (N(0, σ²) logits per pitch class of the key) of the lead: each track's tune
# favours its own scale degrees, the way a real melody has its characteristic notes (`chiplofi
# eval`, seeds 0-2, track-to-track cosine, σ 1.0 / 1.25 / 1.5: lo-fi 0.51-0.56 / 0.50-0.55 /
# 0.50-0.53; at 1.5 the lead leans on its favourite notes off the chord: consonance 0.799, NES
# repeated lead notes 0.21, both over their goals; at 1.25 0.813 and 0.196).
TRACK_PITCH_LEAN = 1.25


@dataclass(frozen=True)
class ComposedBar:
    """One bar of the stream: plain data, times in 16th steps from the bar's downbeat."""

    track_id: str
    bar_index: int  # within its track
    section: str  # "intro", "A", "B", "A'", "B'", "C", "A''", "outro"
    key: str  # e.g. "A minor"
    tempo_bpm: float
    chord: str  # e.g. "Dm9"
    notes: tuple[Note, ...]  # (voice, pitch, start_step, length_steps, velocity); may ring past the bar
    bars_in_track: int = 0
    track_index: int = 0
    steps: int = STEPS_PER_BAR


@dataclass
class Controls:
    """What a listener (or the schedule) can change. Key and tempo apply from the next track."""

    seed: int = 0
    temperature: float = 1.0  # 0.1 (safe) .. 2 (adventurous)
    style_blend: float = 0.3  # 0 = lo-fi .. 1 = NES
    key: str | None = None  # e.g. "F minor"; None = chosen per track
    tempo_bpm: float | None = None  # None = chosen per track in 70..92
    energy: float = 0.5  # 0 (sparse) .. 1 (busy)

    def __post_init__(self) -> None:
        if not 0.05 <= self.temperature <= 3.0:
            raise ModelError(f"temperature must be within 0.05..3, not {self.temperature}")
        if not 0.0 <= self.style_blend <= 1.0:
            raise ModelError(f"style_blend must be within 0..1, not {self.style_blend}")
        if not 0.0 <= self.energy <= 1.0:
            raise ModelError(f"energy must be within 0..1, not {self.energy}")
        if self.tempo_bpm is not None and not 40.0 <= self.tempo_bpm <= 200.0:
            raise ModelError(f"tempo_bpm must be within 40..200, not {self.tempo_bpm}")
        if self.key is not None:
            parse_key(self.key)


@dataclass
class _Plan:
    """One track's plan."""

    index: int
    track_id: str
    tonic: int
    mode: int
    tempo: float
    sections: list[tuple[str, int]]  # (label, bars)
    rng: np.random.Generator
    intro: str = "full"  # which voices open the track: see INTROS
    colour: str = ""  # the track's scale colour in MODES (ionian/aeolian when empty)
    density: int = 0  # -1, 0, +1: this track's activity against the style's (DENSITY_STEP levels)
    register: float = 0.0  # semitones this track's lead leans up (+) or down (-)
    motif_share: float = 0.5  # chance that a phrase restates the previous one's lead on its own chords
    # The track's decoded lead bars so far, newest last: (chord, lead column (16,)). A bar the
    # decoder leaves without melody takes one of them up again on its own chord (`_motif_lead`).
    motifs: list[tuple[int, np.ndarray]] = field(default_factory=list)
    chord_bias: np.ndarray | None = None  # (N_CHORDS,) logits this track adds to the LSTM's chord head
    pitch_lean: np.ndarray | None = None  # (12,) logits this track's lead adds per pitch class of the key
    bounce: bool = False  # NES: this track's triangle bounces a hammered note by octaves (BOUNCE_SHARE)
    drum_draw: float = 1.0  # 0..1: below the style's NES_DRUMLESS_SHARE the track plays no drums

    @property
    def bars(self) -> int:
        return sum(n for _, n in self.sections)

    @property
    def shift(self) -> int:
        """Semitones from the normalised key (C major / A minor) to the track's key, -6..5."""
        return ((self.tonic - TONIC_ROOT[self.mode] + 6) % 12) - 6

    @property
    def key(self) -> str:
        return key_name(self.tonic, self.mode)

    @property
    def scale(self) -> frozenset[int]:
        """Pitch classes of the track's scale colour, in the normalised key."""
        return MODES[self.mode][self.colour or next(iter(MODES[self.mode]))][0]

    def coloured(self, chord: int) -> int:
        """`chord` as the track's scale colour has it (dorian's IV is major, ...)."""
        root, quality = chord_parts(chord)
        changes = MODES[self.mode][self.colour or next(iter(MODES[self.mode]))][1]
        name = changes.get((root, CHORD_QUALITIES[quality]))
        return chord if name is None else chord_index(root, CHORD_QUALITIES.index(name))


@dataclass
class _Material:
    """What a section letter (A, B, C) is made of, kept for its returns."""

    chords: list[int]  # joint chord indices of its loop, normalised key
    latents: list[np.ndarray] = field(default_factory=list)  # first phrase's latents
    tokens: list[np.ndarray] = field(default_factory=list)  # ... and its bars as first decoded
    groove: np.ndarray | None = None  # (16,) drum tokens: the section's beat, kept bar after bar
    comp: tuple[tuple[int, int], ...] = ((0, 16),)  # lo-fi harmony rhythm: (start step, length) per strike
    sustain: bool = False  # lo-fi: chords held to the next strike, one bass note a bar (SUSTAIN_SHARE)


@dataclass
class _RawBar:
    """A decoded bar before notes are finalised (one bar of look-ahead joins held notes)."""

    plan: _Plan
    bar_index: int
    section: str
    chord: int
    tokens: np.ndarray  # (16, 4) int64, normalised key
    harmony_voicing: list[list[int]]  # per harmony onset: the chord tones sounding with it
    velocities: np.ndarray  # (16, 4)
    drum_notes: list[tuple[int, int, int]]  # (step, GM key, velocity)
    last_in_track: bool


class Composer:
    """Endless iterator of `ComposedBar`s from the numpy VAE decoder and LSTM (`models.inference`).

    Torch-free: `from_checkpoint` reads the weights with numpy; `from_modules` takes trained
    torch modules (training, evaluation). Both build the same numpy networks, so the same
    weights, seed and controls give the same bars either way.
    """

    def __init__(self, decoder: FastDecoder, lstm: FastLSTM, controls: Controls | None = None,
                 model_id: str = "", latent_source: str = "lstm") -> None:
        if decoder.latent_dim != lstm.config.latent_dim:
            raise ModelError(f"VAE latent size {decoder.latent_dim} and LSTM latent size "
                             f"{lstm.config.latent_dim} differ")
        if latent_source not in LATENT_SOURCES:
            raise ModelError(f"latent_source must be one of {', '.join(LATENT_SOURCES)}, not {latent_source!r}")
        self._decoder = decoder
        self._fast_lstm = lstm
        # "noise": every bar's latent drawn from N(0, 1) instead of the LSTM's prediction (the
        # evaluation's ablation: what the LSTM adds over the VAE's prior).
        self.latent_source = latent_source
        self._allowed = {mode: self._allowed_chords(mode) for mode in (MAJOR, MINOR)}
        self._chromatic_boost = {mode: np.zeros(N_CHORDS) for mode in (MAJOR, MINOR)}
        for mode, chords in CHROMATIC.items():
            for (root, quality), target in chords.items():
                boost = CHROMATIC_BOOST["borrowed" if target is None else "dominant"]
                self._chromatic_boost[mode][chord_index(root, CHORD_QUALITIES.index(quality))] = boost
        self.controls = controls or Controls()
        self.model_id = model_id
        self._track_index = 0
        self._previous_plan: _Plan | None = None
        self._pending: deque[_RawBar] = deque()
        self._bars = self._bar_generator()
        self.model_seconds = 0.0  # CPU time of this thread in the networks (LSTM + VAE), for benchmarks
        self.bars_made = 0

    @classmethod
    def from_checkpoint(cls, directory: str | Path | None = None, controls: Controls | None = None,
                        latent_source: str = "lstm") -> Composer:
        """A composer from a checkpoint directory (default: the shipped `models/checkpoints`), without torch."""
        vae, lstm = ckpt.load_weight_pair(directory or ckpt.shipped_directory())
        model_id = f"{vae.info.model_id}+{lstm.info.model_id}"
        return cls(FastDecoder(vae.arrays, vae.config), FastLSTM(lstm.arrays, lstm.config), controls, model_id,
                   latent_source)

    @classmethod
    def from_modules(cls, vae: BarVAE, lstm: BarLSTM, controls: Controls | None = None,
                     model_id: str = "", latent_source: str = "lstm") -> Composer:
        """A composer from trained torch modules (`models.vae.BarVAE`, `models.lstm.BarLSTM`)."""
        return cls(FastDecoder.from_module(vae), FastLSTM.from_module(lstm), controls, model_id, latent_source)

    def set_controls(self, **changes: object) -> None:
        """Change controls; temperature, style and energy apply from the next bar."""
        self.controls = dataclasses.replace(self.controls, **changes)

    def __iter__(self) -> Iterator[ComposedBar]:
        return self

    def __next__(self) -> ComposedBar:
        # One bar of look-ahead: a note held into the next bar is joined into one note.
        while len(self._pending) < 2:
            self._pending.append(next(self._bars))
        current = self._pending.popleft()
        following = None if current.last_in_track else self._pending[0]
        self.bars_made += 1
        return self._finalise(current, following)

    # ----------------------------------------------------------------- planning

    def start_track(self, number: int, after: tuple[str, float] | None = None) -> None:
        """Begin track `number` with the next bar, as if it followed a track in key `after[0]`
        (e.g. "G minor") at `after[1]` BPM: the key is a related one, the tempo a nearby one.

        What was composed ahead is discarded. A stream that restarts, or a model that takes over
        from another, continues the radio's track numbering and key path this way; the music of
        track `number` still comes from (seed, number) alone, so it is reproducible.
        """
        if number < 0:
            raise ModelError(f"track number must be >= 0, not {number}")
        previous = None
        if after is not None:
            tonic, mode = parse_key(after[0])
            tempo = float(np.clip(after[1], *TEMPO_RANGE))
            previous = _Plan(number - 1, "", tonic, mode, tempo, [], np.random.default_rng(0))
        self._track_index = number
        self._previous_plan = previous
        self._pending.clear()
        self._bars = self._bar_generator()

    def _plan_track(self) -> _Plan:
        index = self._track_index
        self._track_index += 1
        rng = np.random.default_rng([self.controls.seed & 0xFFFFFFFF, index, 0xC0FFEE])
        previous = self._previous_plan
        if self.controls.key is not None:
            tonic, mode = parse_key(self.controls.key)
        elif previous is None:
            tonic, mode = int(rng.integers(0, 12)), int(rng.random() < 0.6)
        else:
            # A related key: same, relative, a fifth either way (same mode), or the parallel mode.
            moves = [(0, previous.mode), (7, previous.mode), (5, previous.mode),
                     (3 if previous.mode == MINOR else 9, 1 - previous.mode), (2, previous.mode), (10, previous.mode)]
            step, mode = moves[int(rng.choice(len(moves), p=[0.1, 0.25, 0.25, 0.2, 0.1, 0.1]))]
            tonic = (previous.tonic + step) % 12
        if self.controls.tempo_bpm is not None:
            tempo = float(self.controls.tempo_bpm)
        elif previous is None:
            tempo = float(rng.uniform(*TEMPO_RANGE))
        else:
            tempo = float(np.clip(previous.tempo + rng.uniform(-8.0, 8.0), *TEMPO_RANGE))
        tempo = round(tempo, 1)
        seconds = rng.uniform(*TRACK_SECONDS)
        total_bars = seconds * tempo / 240.0
        middle = max(3, int(round((total_bars - INTRO_BARS - OUTRO_BARS) / SECTION_BARS)))
        forms = {3: ["A", "B", "A'"], 4: ["A", "B", "A'", "B'"], 5: ["A", "B", "A'", "C", "A''"],
                 6: ["A", "B", "A'", "C", "B'", "A''"], 7: ["A", "A'", "B", "A'", "C", "B'", "A''"]}
        alternatives = {4: ["A", "A'", "B", "A''"], 5: ["A", "B", "C", "B'", "A'"],
                        6: ["A", "A'", "B", "C", "B'", "A''"]}
        form = forms[min(middle, 7)]
        if min(middle, 7) in alternatives and rng.random() < 0.5:
            form = alternatives[min(middle, 7)]
        sections = [("intro", INTRO_BARS)] + [(label, SECTION_BARS) for label in form] + [("outro", OUTRO_BARS)]
        colours = list(MODES[mode])
        plan = _Plan(index, f"s{self.controls.seed}-t{index:04d}", tonic, mode, tempo, sections, rng,
                     intro=str(rng.choice(list(INTROS))), density=int(rng.integers(-1, 2)),
                     register=float(rng.uniform(-3.0, 3.0)), motif_share=float(rng.uniform(0.3, 0.8)),
                     colour=colours[int(rng.choice(len(colours), p=MODE_WEIGHTS[mode]))],
                     chord_bias=TRACK_CHORD_BIAS * rng.standard_normal(N_CHORDS),
                     pitch_lean=TRACK_PITCH_LEAN * rng.standard_normal(12),
                     # (lo-fi draws nothing here, so its music for a seed is as it was.)
                     bounce=self.controls.style_blend >= 0.5 and bool(rng.random() < BOUNCE_SHARE),
                     drum_draw=self._drum_draw(index))
        self._previous_plan = plan
        log.info("track %s: %s, %.1f BPM, %d bars, form %s%s", plan.track_id, plan.key, tempo, plan.bars,
                 " ".join(label for label, _ in sections), "" if self._plays_drums(plan.drum_draw) else ", no drums")
        return plan

    def _drum_draw(self, index: int) -> float:
        """Track `index`'s place in 0..1 for `NES_DRUMLESS_SHARE`: an offset of the seed's own plus
        `index` times the golden ratio's fraction, so that any run of tracks holds the share to
        within about a track (drawn one by one, 16 of one seed's first 22 NES tracks went without)
        and a track keeps its place when the stream starts again at its number."""
        offset = float(np.random.default_rng([self.controls.seed & 0xFFFFFFFF, 0xD2]).random())
        return (offset + index * GOLDEN_FRACTION) % 1.0

    def _plays_drums(self, drum_draw: float) -> bool:
        """Whether a track of that draw plays drums at the controls' style as they are now (a mood
        may move the style within a track): NES tracks go without in `NES_DRUMLESS_SHARE` of
        tracks at style 1.0, in proportion fewer down to none at style 0.5 and below."""
        share = NES_DRUMLESS_SHARE * float(np.clip(2.0 * self.controls.style_blend - 1.0, 0.0, 1.0))
        return drum_draw >= share

    @staticmethod
    def _muted_in_intro(intro: str, drums: bool) -> tuple[str, ...]:
        """The voices an intro keeps silent for its first two bars (`INTROS`); without drums a
        "beat" intro would leave the bass alone, so harmony and bass open instead."""
        return INTROS["keys-and-bass" if intro == "beat" and not drums else intro]

    # ----------------------------------------------------------------- style and chords

    def _style_vector(self) -> np.ndarray:
        """Style weights over STYLES: the lo-fi ↔ NES blend over a Lakh share for full arrangements."""
        blend = self.controls.style_blend
        lakh = 0.35
        weights = {"lofi": (1 - blend) * (1 - lakh), "nes": blend * (1 - lakh), "lakh": lakh}
        return np.array([weights[s] for s in STYLES], dtype=np.float32)

    @staticmethod
    def _allowed_chords(mode: int) -> np.ndarray:
        """(N_CHORDS,) bool: the key's diatonic chords and the chromatic ones of `mode`."""
        allowed = np.zeros(N_CHORDS, dtype=bool)
        for root, qualities in DIATONIC.items():
            for quality in qualities:
                if quality is not None:
                    allowed[chord_index(root, CHORD_QUALITIES.index(quality))] = True
        for root, quality in CHROMATIC[mode]:
            allowed[chord_index(root, CHORD_QUALITIES.index(quality))] = True
        return allowed

    @staticmethod
    def _chromatic(chord: int, mode: int) -> tuple[bool, int | None]:
        """(is the chord from outside the key, the root it resolves to or None)."""
        root, quality = chord_parts(chord)
        key = (root, CHORD_QUALITIES[quality])
        if key in CHROMATIC[mode]:
            return True, CHROMATIC[mode][key]
        return False, None

    def _colour(self, chord: int, rng: np.random.Generator) -> int:
        """Give a sampled diatonic chord its lo-fi colour: more 7ths and 9ths the more lo-fi.
        Chromatic chords keep the quality the LSTM chose."""
        root, quality = chord_parts(chord)
        if root not in DIATONIC or CHORD_QUALITIES[quality] not in DIATONIC[root]:
            return chord
        triad, seventh, ninth = DIATONIC[root]
        lofi = 1.0 - self.controls.style_blend
        draw = rng.random()
        if ninth is not None and draw < 0.45 * lofi:
            name = ninth
        elif draw < 0.3 + 0.6 * lofi:
            name = seventh
        else:
            name = CHORD_QUALITIES[quality] if CHORD_QUALITIES[quality] in (triad, seventh, ninth) else triad
        return chord_index(root, CHORD_QUALITIES.index(name))

    def _sample_chord(self, output: np.ndarray, rng: np.random.Generator, temperature: float, mode: int,
                      avoid: int | None = None, resolve_to: int | None = None, last: bool = False) -> int:
        """The next chord from the LSTM's chord head, within the key and its chromatic chords.

        `resolve_to`: the root of the loop's first chord, which a chromatic dominant in the last
        bar must resolve to (elsewhere the next bar resolves it).
        """
        logits = self._fast_lstm.chord_logits(output) + self._chromatic_boost[mode]
        playing = self._previous_plan  # the track being drafted (planned last)
        if playing is not None and playing.chord_bias is not None:
            logits = logits + playing.chord_bias
        allowed = self._allowed[mode].copy()
        if avoid is not None:  # a loop that changes chord every bar
            root_avoid = chord_parts(avoid)[0]
            for quality in range(len(CHORD_QUALITIES)):
                allowed[chord_index(root_avoid, quality)] = False
        if last:  # a dominant at the loop's end must lead back to its start
            for (root, quality), target in CHROMATIC[mode].items():
                if target is not None and target != resolve_to:
                    allowed[chord_index(root, CHORD_QUALITIES.index(quality))] = False
        chord = sample_from_logits(logits, max(0.3, temperature), rng, allowed)
        return self._colour(chord, rng)

    def _resolution(self, target_root: int, rng: np.random.Generator) -> int:
        """The diatonic chord on `target_root` that a dominant resolves to, coloured."""
        return self._colour(chord_index(target_root, CHORD_QUALITIES.index(DIATONIC[target_root][0])), rng)

    def _draft_loop(self, state: FastState, previous: tuple[np.ndarray | None, int], mode: int,
                    rng: np.random.Generator, start_on_tonic: bool) -> list[int]:
        """A four-bar chord loop drafted from the LSTM (on a copy of its state)."""
        state = state.clone()
        style = self._style_vector()
        latent, chord = previous
        chords: list[int] = []
        temperature = self.controls.temperature
        resolve: int | None = None  # the root the previous chord (a dominant) must go to
        for bar in range(LOOP_BARS):
            state, output = self._fast_lstm.step(state, latent, chord, style, mode)
            if bar == 0 and start_on_tonic:
                tonic = TONIC_ROOT[mode]
                next_chord = self._colour(chord_index(tonic, CHORD_QUALITIES.index(DIATONIC[tonic][0])), rng)
            elif resolve is not None:
                next_chord = self._resolution(resolve, rng)
            else:
                first_root = chord_parts(chords[0])[0] if chords else None
                next_chord = self._sample_chord(output, rng, temperature, mode, avoid=chords[-1] if chords else None,
                                                resolve_to=first_root, last=bar == LOOP_BARS - 1)
            resolve = self._chromatic(next_chord, mode)[1]
            mu, logvar = self._fast_lstm.latent_distribution(output, next_chord)
            latent, chord = sample_latent(mu, logvar, 0.5 * temperature, rng), next_chord
            chords.append(next_chord)
        return chords

    # ----------------------------------------------------------------- bar generation

    def _bar_generator(self) -> Iterator[_RawBar]:
        while True:
            plan = self._plan_track()
            rng = plan.rng
            state = self._fast_lstm.initial_state()
            previous: tuple[np.ndarray | None, int] = (None, 0)  # None latent = song start
            materials: dict[str, _Material] = {}
            bar_index = 0
            tail = np.zeros((TAIL_STEPS, 4), dtype=np.int64)  # the track's last steps so far (rests before)
            for section_number, (label, n_bars) in enumerate(plan.sections):
                letter = label.rstrip("'")
                if label in ("intro", "outro"):
                    letter = "A"
                if letter not in materials:
                    loop = self._draft_loop(state, previous, plan.mode, rng, start_on_tonic=letter == "A")
                    comp = COMP_PATTERNS[int(rng.choice(len(COMP_PATTERNS), p=COMP_WEIGHTS))]
                    # (NES draws nothing here, so its music for a seed is as it was.)
                    sustain = self.controls.style_blend < 0.5 and bool(rng.random() < SUSTAIN_SHARE)
                    materials[letter] = _Material([plan.coloured(chord) for chord in loop], comp=comp,
                                                  sustain=sustain)
                material = materials[letter]
                is_return = label.endswith("'") or label == "outro"
                # The second phrase restates the first one's melody on its own chords (a sequence),
                # or answers it freely; returns replay their first phrase as it was.
                restate = (n_bars >= 2 * LOOP_BARS and label not in ("intro", "outro")
                           and rng.random() < plan.motif_share)
                section_bars: list[tuple[int, np.ndarray]] = []  # (chord, tokens) of this section so far
                for bar_in_section in range(n_bars):
                    chord = material.chords[bar_in_section % LOOP_BARS]
                    if label == "outro" and bar_in_section == n_bars - 1:
                        tonic = TONIC_ROOT[plan.mode]
                        chord = chord_index(tonic, CHORD_QUALITIES.index(DIATONIC[tonic][1]))
                    started = time.thread_time()
                    state, output = self._fast_lstm.step(state, previous[0], previous[1], self._style_vector(),
                                                         plan.mode)
                    reuse = (is_return and label != "outro" and bar_in_section < LOOP_BARS
                             and bar_in_section < len(material.latents))
                    if reuse:
                        latent = material.latents[bar_in_section]
                    else:
                        latent = self._next_latent(output, chord, rng)
                    self.model_seconds += time.thread_time() - started
                    energy = self._energy(label, bar_in_section, n_bars)
                    tokens, velocities = self._decode(latent, chord, plan, energy, rng, tail)
                    if reuse:  # the phrase returns as it was first played and arranged
                        as_played = material.tokens[bar_in_section].copy()
                        tokens[:, :3] = self._clean(as_played, chord, tail[-1], plan.scale)[:, :3]
                    else:
                        if restate and LOOP_BARS <= bar_in_section < n_bars - 1:
                            source_chord, source = section_bars[bar_in_section - LOOP_BARS]
                            tokens[:, 0] = self._restated_lead(source[:, 0], source_chord, chord)
                            tokens = self._clean(tokens, chord, tail[-1], plan.scale)
                        self._bass_on_chord(tokens, chord, tail, rng)
                        if self.controls.style_blend < 0.5:
                            self._lofi_phrasing(tokens, material.sustain)
                            self._comp_harmony(tokens, chord, material.comp, material.sustain)
                        else:
                            self._chip_phrasing(tokens, chord, plan.bounce)
                            _harmony_under_lead(tokens)
                        if label == letter and bar_in_section < LOOP_BARS:
                            material.latents.append(latent)
                            material.tokens.append(tokens.copy())
                    if material.groove is None:
                        material.groove = self._groove(tokens[:, 3])
                    tokens[:, 3] = material.groove
                    drums = self._plays_drums(plan.drum_draw)
                    if label == "intro" and bar_in_section < 2:
                        for voice in self._muted_in_intro(plan.intro, drums):
                            tokens[:, VOICES.index(voice)] = REST
                    section_bars.append((chord, tokens.copy()))
                    last_of_section = bar_in_section == n_bars - 1
                    last_in_track = last_of_section and section_number == len(plan.sections) - 1
                    drum_notes = self._drums(tokens, velocities, rng, fill=last_of_section and not last_in_track,
                                             crash=bar_in_section == 0 and label != "intro",
                                             sparse=label in ("intro", "outro"))
                    if not drums:
                        drum_notes = []  # (drawn all the same: the bars after it draw as they would)
                    if last_in_track:
                        tokens = self._final_bar(tokens)
                    voicing = self._voice_harmony(tokens, chord)
                    yield _RawBar(plan, bar_index, label, chord, tokens, voicing, velocities, drum_notes, last_in_track)
                    tail = np.concatenate([tail, tokens])[-TAIL_STEPS:]
                    previous = (latent, chord)
                    bar_index += 1

    # ----------------------------------------------------------------- arranging a decoded bar

    @staticmethod
    def _restated_lead(source: np.ndarray, source_chord: int, chord: int) -> np.ndarray:
        """A lead bar (16,) replayed on another chord: the same rhythm and contour, moved by the
        step between the chords' roots (`_clean` then pulls its notes onto the scale)."""
        moved = source.copy()
        source_root, root = chord_parts(source_chord)[0], chord_parts(chord)[0]
        if source_root >= 12 or root >= 12:
            return moved
        step = (root - source_root + 6) % 12 - 6  # -6..5 semitones
        onsets = moved >= FIRST_PITCH_TOKEN
        moved[onsets] = np.clip(moved[onsets] + step, FIRST_PITCH_TOKEN, PITCHED_VOCAB - 1)
        return moved

    def _bass_on_chord(self, tokens: np.ndarray, chord: int, tail: np.ndarray, rng: np.random.Generator) -> None:
        """The bass starts the bar on the chord (mostly its root), never holding over a change."""
        root, quality = chord_parts(chord)
        if root >= 12:
            return
        column = tokens[:, 2]
        low, high = PITCH_RANGES["bass"]
        tones = [(root + i) % 12 for i in CHORD_INTERVALS[CHORD_QUALITIES[quality]][:3]]
        root_share = self._by_style(ROOT_SHARE)
        target_class = root if rng.random() < root_share else tones[int(rng.integers(1, len(tones)))]
        before = [token_to_pitch(2, t) for t in tail[:, 2] if t >= FIRST_PITCH_TOKEN]
        home = self._by_style(BASS_HOME)
        near = before[-1] if before else home
        candidates = [p for p in range(max(low, round(BASS_FLOOR[0])), high + 1) if p % 12 == target_class and p <= 55]
        pitch = min(candidates, key=lambda p: (abs(p - near) + BASS_PULL * abs(p - home), p))
        column[0] = FIRST_PITCH_TOKEN + pitch - low
        if (column[1:] == REST).all():
            column[1:8] = HOLD  # a lone downbeat note lasts half a bar

    @staticmethod
    def _groove(drums: np.ndarray) -> np.ndarray:
        """A section's beat from its first decoded drum bar (16,): kick on one, snare on the
        backbeat, hats at least on the eighths, so the groove never loses its pulse."""
        groove = drums.copy()
        groove[0] |= 1  # kick
        groove[[4, 12]] |= 2  # snare
        hats = (groove & (4 | 8)) > 0
        if hats.sum() < 4:
            groove[::2] |= 4
        return groove

    @staticmethod
    def _lofi_phrasing(tokens: np.ndarray, sustain: bool) -> None:
        """Lo-fi plays few, long notes: the bass keeps its onsets on `LOFI_BASS_STEPS` (beats 1
        and 3; a sustained section: `SUSTAIN_BASS_STEPS`), and lead and bass notes ring on into
        rests (`LOFI_RING`)."""
        bass = tokens[:, 2]
        kept = SUSTAIN_BASS_STEPS if sustain else LOFI_BASS_STEPS
        for step in range(STEPS_PER_BAR):
            if bass[step] >= FIRST_PITCH_TOKEN and step not in kept:
                bass[step] = HOLD if step > 0 else bass[step]
        for voice in (0, 2):
            _ring_into_rests(tokens[:, voice], LOFI_RING[voice // 2], range(STEPS_PER_BAR))

    @staticmethod
    def _chip_phrasing(tokens: np.ndarray, chord: int, bounce: bool) -> None:
        """NES idioms: a lead note on the beat rings into a rest (`NES_LEAD_RING`); for lines that
        hammer one note, the second pulse sweeps an arpeggio over the chord instead, and (in a
        track that `bounce`s) the triangle jumps between octaves."""
        _ring_into_rests(tokens[:, 0], NES_LEAD_RING, BEAT_STEPS)
        root, quality = chord_parts(chord)
        if root >= 12:
            return
        tones = chord_tones(root, quality)
        for voice in (1, 2):
            column = tokens[:, voice]
            low, high = PITCH_RANGES[VOICES[voice]]
            onsets = np.flatnonzero(column >= FIRST_PITCH_TOKEN)
            if onsets.size < 3:
                continue
            pitches = [token_to_pitch(voice, column[step]) for step in onsets]
            if voice == 1:
                base = pitches[0]
                ladder = [p for p in range(max(low, base - ARPEGGIO_SPAN[0]), min(high, base + ARPEGGIO_SPAN[1]) + 1)
                          if p % 12 in tones]
                if len(ladder) < 3:
                    continue
                cycle = ladder + ladder[-2:0:-1]  # up, then down, then up again
                start = min(range(len(ladder)), key=lambda i: abs(ladder[i] - base))
                position = start
                for k in range(1, len(onsets)):
                    if pitches[k] == pitches[k - 1]:
                        position += 1
                        column[onsets[k]] = FIRST_PITCH_TOKEN + cycle[position % len(cycle)] - low
            elif bounce:
                for k in range(1, len(onsets)):
                    if pitches[k] == pitches[k - 1] and k % 2 == 1:
                        bounced = pitches[k] + 12 if pitches[k] + 12 <= high else pitches[k] - 12
                        if low <= bounced:
                            column[onsets[k]] = FIRST_PITCH_TOKEN + bounced - low

    @staticmethod
    def _comp_rhythm(decoded: np.ndarray, pattern: tuple[tuple[int, int], ...],
                     hold: int) -> tuple[tuple[int, int], ...]:
        """(start step, length) of a lo-fi bar's chord strikes: one on the downbeat, then one where
        the decoded harmony (16,) starts a note at least `COMP_GAP` steps after the last strike; a
        bar whose decoded harmony is silent keeps the section's `pattern`. No strike sounds longer
        than `hold` steps."""
        onsets = np.flatnonzero(decoded >= FIRST_PITCH_TOKEN).tolist()
        if not onsets:
            return tuple((start, min(length, hold)) for start, length in pattern)
        starts = [0]
        for step in onsets:
            if step - starts[-1] >= COMP_GAP:
                starts.append(step)
        ends = starts[1:] + [STEPS_PER_BAR]
        return tuple((start, min(end - start, hold)) for start, end in zip(starts, ends, strict=True))

    def _comp_harmony(self, tokens: np.ndarray, chord: int, pattern: tuple[tuple[int, int], ...],
                      sustain: bool) -> None:
        """Lo-fi harmony: strikes in the rhythm of the decoded harmony (`_comp_rhythm`), stabs of
        at most `COMP_HOLD` steps or, in a sustained section, held to the next strike; the top note a
        chord tone under the lead and above the bass (voiced wide by `_voice_harmony`)."""
        root, quality = chord_parts(chord)
        if root >= 12:
            return
        pattern = self._comp_rhythm(tokens[:, 1], pattern, STEPS_PER_BAR if sustain else COMP_HOLD)
        tones = chord_tones(root, quality)
        low, high = PITCH_RANGES["harmony"]
        bass = [token_to_pitch(2, t) for t in tokens[:, 2] if t >= FIRST_PITCH_TOKEN]
        decoded = [token_to_pitch(1, t) for t in tokens[:, 1] if t >= FIRST_PITCH_TOKEN]
        floor = max(bass) + 10 if bass else 55
        # A lead that dips into the chord's room goes up an octave where it can: it sings on top.
        lead_high = PITCH_RANGES["lead"][1]
        lead = tokens[:, 0]
        for step in np.flatnonzero(lead >= FIRST_PITCH_TOKEN):
            if token_to_pitch(0, lead[step]) < floor + 6 and token_to_pitch(0, lead[step]) + 12 <= lead_high:
                lead[step] += 12
        lead_pitches = [token_to_pitch(0, t) for t in lead if t >= FIRST_PITCH_TOKEN]
        ceiling = min(lead_pitches) - 1 if lead_pitches else 72
        wanted = float(np.median(decoded)) if decoded else 64.0
        candidates = [p for p in range(max(low, floor), min(high, ceiling) + 1) if p % 12 in tones]
        if not candidates:
            candidates = [p for p in range(max(low, floor), high + 1) if p % 12 in tones]
        top = min(candidates, key=lambda p: (abs(p - wanted), p))
        column = np.zeros(STEPS_PER_BAR, dtype=np.int64)
        for start, length in pattern:
            column[start] = FIRST_PITCH_TOKEN + top - low
            column[start + 1:start + length] = HOLD
        tokens[:, 1] = column

    def _next_latent(self, output: np.ndarray, chord: int, rng: np.random.Generator) -> np.ndarray:
        """The next bar's latent (L,): the LSTM's prediction given its chord, or prior noise."""
        if self.latent_source == "noise":
            return rng.standard_normal(self._decoder.latent_dim).astype(np.float32)
        mu, logvar = self._fast_lstm.latent_distribution(output, chord)
        return sample_latent(mu, logvar, self._by_style(LATENT_SPREAD) * self.controls.temperature, rng)

    def _energy(self, label: str, bar_in_section: int, n_bars: int) -> float:
        base = SECTION_ENERGY.get(label, 0.5)
        if label == "outro":
            base -= 0.05 * bar_in_section
        if label == "intro":
            base += 0.05 * bar_in_section
        return float(np.clip(base + (self.controls.energy - 0.5) * 0.8, 0.0, 1.0))

    def _by_style(self, pair: tuple[float, float]) -> float:
        """A setting given for (lo-fi, NES), at the controls' style blend."""
        blend = self.controls.style_blend
        return (1.0 - blend) * pair[0] + blend * pair[1]

    def _activity(self, plan: _Plan, energy: float) -> int:
        """The decoder's activity level 0..3 for a bar: the section's energy; lo-fi plays fewer,
        longer notes (the level drops with the lo-fi share); the track's own density
        (`DENSITY_STEP` levels, wider in lo-fi)."""
        lofi = 1.0 - self.controls.style_blend
        level = (energy * (N_ACTIVITY - 1) + 0.25 - LOFI_ACTIVITY_DROP * lofi
                 + self._by_style(DENSITY_STEP) * plan.density)
        return int(np.clip(round(level), 0, N_ACTIVITY - 1))

    def _decode(self, latent: np.ndarray, chord: int, plan: _Plan, energy: float, rng: np.random.Generator,
                tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (16, 4) and velocities (16, 4) of one bar, every voice sounding.

        `tail` (TAIL_STEPS, 4): the track's steps before this bar (rests before its start).
        """
        root, quality = chord_parts(chord)
        activity = self._activity(plan, energy)
        style, lead_bias = self._style_vector(), self._lead_register_bias(plan)
        cond = self._decoder.condition(root, quality, plan.mode, 0, style, activity)
        temperature = float(np.clip(0.5 * self.controls.temperature, 0.05, 1.5))
        tokens, base = self._sample_tokens(latent, cond, activity, root, tail, temperature, rng, lead_bias)
        held = tail[-1]
        tokens = self._clean(tokens, chord, held, plan.scale)
        # A track whose lead has not sung yet asks the decoder again, livelier, for this bar's lead,
        # so that it has a motif to take up (at activity 0 lo-fi bars mostly decode without melody).
        def lead_at(level: int) -> np.ndarray:  # the bar's lead (16,) decoded again at activity `level`
            cond = self._decoder.condition(root, quality, plan.mode, 0, style, level)
            again, _ = self._sample_tokens(latent, cond, level, root, tail, temperature, rng, lead_bias)
            return self._clean(again, chord, held, plan.scale)[:, 0]

        livelier = activity
        while not plan.motifs and not self._sounds(tokens[:, 0], 0, held) and livelier < N_ACTIVITY - 1:
            livelier += 1
            tokens[:, 0] = lead_at(livelier)
        # A lead of fewer than LEAD_MIN_ONSETS notes (by style) asks once more, a level livelier, and
        # keeps the answer if it sings more: a melody rather than a note held across the bar.
        onsets = int((tokens[:, 0] >= FIRST_PITCH_TOKEN).sum())
        if 0 < onsets < round(self._by_style(LEAD_MIN_ONSETS)) and activity < N_ACTIVITY - 1:
            again = lead_at(activity + 1)
            if (again >= FIRST_PITCH_TOKEN).sum() > onsets:
                tokens[:, 0] = again
        if self._sounds(tokens[:, 0], 0, held):
            if (tokens[:, 0] >= FIRST_PITCH_TOKEN).sum() >= MOTIF_MIN_ONSETS:
                plan.motifs.append((chord, tokens[:, 0].copy()))
                del plan.motifs[:-MOTIF_MEMORY]
        elif plan.motifs and rng.random() < self._by_style(MOTIF_FILL):
            tokens[:, 0] = self._motif_lead(plan.motifs, chord, rng)
            tokens = self._clean(tokens, chord, held, plan.scale)
        self._chord_tones_on_beats(tokens[:, 0], chord)
        for voice in range(4):
            if not self._sounds(tokens[:, voice], voice, held):
                tokens[:, voice] = self._fallback(voice, chord, base[:, voice] if voice < 3 else None, rng)
        velocities = self._velocities(energy, rng)
        return tokens, velocities

    @staticmethod
    def _chord_tones_on_beats(lead: np.ndarray, chord: int) -> None:
        """A lead note (column (16,) of tokens) that starts on a beat (`BEAT_STEPS`) and is not a
        chord tone moves to the nearest one within a tone: the harmony sustains the chord under it."""
        root, quality = chord_parts(chord)
        if root >= 12:
            return
        tones = chord_tones(root, quality)
        low, high = PITCH_RANGES["lead"]
        for step in BEAT_STEPS:
            if lead[step] < FIRST_PITCH_TOKEN:
                continue
            pitch = token_to_pitch(0, lead[step])
            if pitch % 12 in tones:
                continue
            for move in (-1, 1, -2, 2):
                if (pitch + move) % 12 in tones and low <= pitch + move <= high:
                    lead[step] = FIRST_PITCH_TOKEN + pitch + move - low
                    break

    def _motif_lead(self, motifs: list[tuple[int, np.ndarray]], chord: int, rng: np.random.Generator) -> np.ndarray:
        """A lead bar (16,) for a bar the decoder left without melody: one of the track's recent
        lead bars (`motifs`, newest last) moved onto this chord, the nearer ones likelier."""
        weights = MOTIF_RECENCY ** np.arange(len(motifs))[::-1]
        source_chord, source = motifs[int(rng.choice(len(motifs), p=weights / weights.sum()))]
        return self._restated_lead(source, source_chord, chord)

    def _lead_register_bias(self, plan: _Plan) -> np.ndarray:
        """(PITCHED_VOCAB,) logits added to the lead's, centred on `LEAD_CENTRE`; each track leans
        a little its own way."""
        low, _ = PITCH_RANGES["lead"]
        centre = self._by_style(LEAD_CENTRE) + plan.register
        pitches = low + np.arange(PITCHED_VOCAB - FIRST_PITCH_TOKEN)
        bias = np.zeros(PITCHED_VOCAB)
        bias[FIRST_PITCH_TOKEN:] = -0.5 * ((pitches - centre) / 7.0) ** 2
        if plan.pitch_lean is not None:
            bias[FIRST_PITCH_TOKEN:] += plan.pitch_lean[pitches % 12]
        return bias

    def _sample_tokens(self, latent: np.ndarray, cond: np.ndarray, activity: int, root: int, tail: np.ndarray,
                       temperature: float, rng: np.random.Generator,
                       lead_bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (16, 4), pitched base logits (16, 3, V)): steps drawn in order, each from the
        decoder's logits given the tokens drawn before it (the pitched voices together, then drums).

        The lead's logits get `lead_bias` (V,) and lose `REPEAT_PENALTY` on the pitch it just
        played, `RECENT_PENALTY` per recent use of a pitch (melodies move and range) and
        `LEAP_COST` per semitone of a move beyond `LEAP_FREE` (by step and skip). In NES
        (`LEAD_ONSET_KEPT`) the pitch logits are then shifted so that the lead starts a note as
        often as the decoder asked."""
        started = time.thread_time()
        bar = self._decoder.bar(latent, cond, activity, root)
        network_seconds = time.thread_time() - started
        sequence = np.zeros((TAIL_STEPS + STEPS_PER_BAR, 4), dtype=np.int64)  # tail, then this bar
        sequence[:TAIL_STEPS] = tail
        offsets = np.array(CONTEXT_OFFSETS)
        draws = rng.random((STEPS_PER_BAR, 4))
        last_pitch = np.full(3, -1, dtype=np.int64)  # each pitched voice's last onset (pitch index)
        window = round(self._by_style(RECENT_WINDOW))
        repeat_penalty = self._by_style(REPEAT_PENALTY)
        onset_kept = self._by_style(LEAD_ONSET_KEPT)
        leap_cost = self._by_style(LEAP_COST)
        lead_pitches = np.arange(PITCHED_VOCAB - FIRST_PITCH_TOKEN)
        recent: deque[int] = deque(maxlen=window)  # the lead's last onsets (pitch index)
        for position in range(TAIL_STEPS):
            onsets = tail[position, :3] >= FIRST_PITCH_TOKEN
            last_pitch[onsets] = tail[position, :3][onsets] - FIRST_PITCH_TOKEN
            if onsets[0]:
                recent.append(int(last_pitch[0]))
        step_logits = np.full((4, PITCHED_VOCAB), -np.inf)  # drums use their first DRUM_VOCAB columns
        for step in range(STEPS_PER_BAR):
            started = time.thread_time()
            pitched_logits, drum_logits = self._decoder.step_logits(bar, step, sequence[TAIL_STEPS + step - offsets],
                                                                    last_pitch)
            network_seconds += time.thread_time() - started
            step_logits[:3] = pitched_logits
            step_logits[3, :DRUM_VOCAB] = drum_logits
            onset_mass = _log_mass(step_logits[0, FIRST_PITCH_TOKEN:], temperature) if onset_kept else 0.0
            if lead_bias is not None:
                step_logits[0] += lead_bias
            for pitch in recent:
                step_logits[0, FIRST_PITCH_TOKEN + pitch] -= RECENT_PENALTY
            if last_pitch[0] >= 0:
                step_logits[0, FIRST_PITCH_TOKEN + last_pitch[0]] -= repeat_penalty
                if leap_cost:
                    step_logits[0, FIRST_PITCH_TOKEN:] -= leap_cost * np.maximum(
                        np.abs(lead_pitches - last_pitch[0]) - LEAP_FREE, 0)
            if onset_kept:  # the costs chose among the pitches; give back the onset chance they took
                lost = onset_mass - _log_mass(step_logits[0, FIRST_PITCH_TOKEN:], temperature)
                step_logits[0, FIRST_PITCH_TOKEN:] += onset_kept * lost
            drawn = _draw(step_logits, temperature, draws[step])  # the four voices at once
            sequence[TAIL_STEPS + step] = drawn
            onsets = drawn[:3] >= FIRST_PITCH_TOKEN
            last_pitch[onsets] = drawn[:3][onsets] - FIRST_PITCH_TOKEN
            if onsets[0]:
                recent.append(int(last_pitch[0]))
        self.model_seconds += network_seconds
        return sequence[TAIL_STEPS:].copy(), bar["base"]

    def _clean(self, tokens: np.ndarray, chord: int, held: np.ndarray,
               track_scale: frozenset[int] = SCALE_PCS) -> np.ndarray:
        """Holds need a note to hold; onsets off the scale move to the nearest chord or scale tone
        (but a NES lead's chromatic neighbours, `_chromatic_neighbour`)."""
        root, quality = chord_parts(chord)
        chord_pcs = chord_tones(root, quality) if root < 12 else set()
        # Over a chord from outside the key its own tones replace the scale tones a semitone away
        # (G# over E7 in A minor: G would clash).
        foreign = chord_pcs - track_scale
        scale = (track_scale - {(pc + d) % 12 for pc in foreign for d in (-1, 1)}) | chord_pcs
        lofi_rules = self.controls.style_blend < 0.5
        for voice in range(3):
            column = tokens[:, voice]
            sounding = held[voice] != REST
            previous = -1  # the lead's last onset in the bar (MIDI), which a moved note avoids repeating
            for step in range(STEPS_PER_BAR):
                token = column[step]
                if token == HOLD and not sounding:
                    column[step] = REST
                elif token >= FIRST_PITCH_TOKEN:
                    pitch = token_to_pitch(voice, token)
                    if pitch % 12 not in scale and not (voice == 0 and self._chromatic_neighbour(column, step, scale)):
                        low, high = PITCH_RANGES[VOICES[voice]]
                        # The nearest chord tone, or scale tone a semitone away; for a lo-fi lead not
                        # the note it just played where there is another (`REPEAT_PENALTY` chose a move;
                        # moved back onto it, lo-fi leads repeated a note in 13 % of their moves, the
                        # loops in 4-9 %; now 11 %, NES leads, which repeat more, as they were).
                        moved = [pitch + move for move in (-1, 1, -2, 2) if low <= pitch + move <= high
                                 and ((pitch + move) % 12 in chord_pcs
                                      or ((pitch + move) % 12 in scale and move in (-1, 1)))]
                        if voice == 0 and lofi_rules and len(moved) > 1 and moved[0] == previous:
                            moved.pop(0)
                        if moved:
                            column[step] = FIRST_PITCH_TOKEN + moved[0] - low
                    if voice == 0:
                        previous = token_to_pitch(0, column[step])
                sounding = column[step] != REST
        return tokens

    def _chromatic_neighbour(self, lead: np.ndarray, step: int, scale: frozenset[int]) -> bool:
        """Whether the off-scale lead onset at `step` of `lead` (16,) stays (`CHROMATIC_LEAD_FROM`):
        off the beat, with a scale tone a semitone away as the bar's lead onset before or after it."""
        if self.controls.style_blend < CHROMATIC_LEAD_FROM or step in BEAT_STEPS:
            return False
        onsets = [s for s in range(STEPS_PER_BAR) if lead[s] >= FIRST_PITCH_TOKEN]
        at = onsets.index(step)
        pitch = token_to_pitch(0, lead[step])
        neighbours = [token_to_pitch(0, lead[onsets[i]]) for i in (at - 1, at + 1) if 0 <= i < len(onsets)]
        return any(abs(other - pitch) == 1 and other % 12 in scale for other in neighbours)

    @staticmethod
    def _sounds(column: np.ndarray, voice: int, held: np.ndarray) -> bool:
        if voice == 3:
            return bool((column > 0).any())
        return bool((column >= FIRST_PITCH_TOKEN).any() or (held[voice] != REST and column[0] == HOLD))

    def _fallback(self, voice: int, chord: int, logits: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """A simple part for a voice the decoder left silent: its most likely onsets on the chord."""
        root, quality = chord_parts(chord)
        root = 0 if root >= 12 else root
        column = np.zeros(STEPS_PER_BAR, dtype=np.int64)
        if voice == 3:
            column[[0, 8]] |= 1  # kick
            column[[4, 12]] |= 2  # snare
            column[::2] |= 4  # closed hat
            return column
        low, high = PITCH_RANGES[VOICES[voice]]
        tones = [(root + i) % 12 for i in CHORD_INTERVALS[CHORD_QUALITIES[quality]]]
        # The chord tone the decoder liked best at the downbeat (pitch logits of step 0).
        candidates = [p for p in range(low, high + 1) if p % 12 in tones]
        scores = [logits[0, FIRST_PITCH_TOKEN + p - low] for p in candidates]
        pitch = candidates[int(np.argmax(scores))]
        if voice == 2:
            pitch = min((p for p in range(low, high + 1) if p % 12 == root), key=lambda p: abs(p - 40))
        if voice == 0:  # one held note: two onsets of one pitch would be a lead that stutters
            column[0] = FIRST_PITCH_TOKEN + pitch - low
            column[1:8] = HOLD
            return column
        for start in (0, 8):
            column[start] = FIRST_PITCH_TOKEN + pitch - low
            column[start + 1:start + 8] = HOLD
        return column

    def _velocities(self, energy: float, rng: np.random.Generator) -> np.ndarray:
        """Velocity per step and voice: louder with energy, accents on the beats."""
        accent = np.array([1.0 if s % 4 == 0 else (0.93 if s % 2 == 0 else 0.86) for s in range(STEPS_PER_BAR)])
        velocities = np.zeros((STEPS_PER_BAR, 4))
        for voice, name in enumerate(VOICES):
            velocities[:, voice] = BASE_VELOCITY[name] * (0.8 + 0.35 * energy) * accent
        velocities *= rng.uniform(0.95, 1.05, size=velocities.shape)
        return np.clip(np.round(velocities), 1, 127).astype(np.int64)

    def _drums(self, tokens: np.ndarray, velocities: np.ndarray, rng: np.random.Generator, *, fill: bool,
               crash: bool, sparse: bool) -> list[tuple[int, int, int]]:
        from models.tokens import DRUM_CLASS_KEYS

        notes = []
        fill_pattern = FILLS[int(rng.integers(len(FILLS)))] if fill else ()
        fill_from = min((step for step, _ in fill_pattern), default=STEPS_PER_BAR)
        for step in range(min(fill_from, STEPS_PER_BAR)):
            mask = int(tokens[step, 3])
            for drum_class, key in enumerate(DRUM_CLASS_KEYS):
                if mask & (1 << drum_class):
                    if sparse and drum_class in (2, 3) and step % 4 != 0:
                        continue  # intro/outro: hats only on the beats
                    notes.append((step, key, int(velocities[step, 3])))
        for step, key in fill_pattern:
            notes.append((step, key, int(min(127, velocities[step, 3] * (0.85 + 0.2 * step / 15)))))
        if crash:
            notes.append((0, CRASH, int(velocities[0, 3])))
        return notes

    @staticmethod
    def _final_bar(tokens: np.ndarray) -> np.ndarray:
        """The track's last bar: pitched notes ring to the end instead of stopping short."""
        tokens = tokens.copy()
        for voice in range(3):
            onsets = np.flatnonzero(tokens[:, voice] >= FIRST_PITCH_TOKEN)
            if onsets.size:
                last = onsets[-1]
                tokens[last + 1:, voice] = HOLD
        return tokens

    def _voice_harmony(self, tokens: np.ndarray, chord: int) -> list[list[int]]:
        """Chord tones under each harmony onset (lo-fi: 2–3 notes, spread wide; NES: the bare
        line), never down to the bass: the lowest stays a minor third above the bar's highest
        bass note."""
        root, quality = chord_parts(chord)
        if root >= 12:
            return [[] for _ in np.flatnonzero(tokens[:, 1] >= FIRST_PITCH_TOKEN)]
        tones = [(root + i) % 12 for i in CHORD_INTERVALS[CHORD_QUALITIES[quality]]]
        lofi = 1.0 - self.controls.style_blend
        extra = int(round(2 * lofi))
        spread = lofi >= 0.5  # open voicing: every other chord tone on the way down
        bass = [token_to_pitch(2, t) for t in tokens[:, 2] if t >= FIRST_PITCH_TOKEN]
        floor = max(bass) + 3 if bass else 0
        voicings = []
        for step in np.flatnonzero(tokens[:, 1] >= FIRST_PITCH_TOKEN):
            top = token_to_pitch(1, tokens[step, 1])
            span = 17 if spread else 12
            under = [p for p in range(top - 3, max(top - span, floor) - 1, -1) if p % 12 in tones]
            below: list[int] = []
            for pitch in under[1::2] + under[0::2] if spread else under:
                if len(below) < extra and all(abs(pitch - q) >= 3 for q in below):
                    below.append(pitch)
            voicings.append(sorted(below, reverse=True))
        return voicings

    # ----------------------------------------------------------------- notes

    def _finalise(self, bar: _RawBar, following: _RawBar | None) -> ComposedBar:
        shift = bar.plan.shift
        notes: list[Note] = []
        harmony_onset = 0
        # The bass as heard (moved into the track's key, lifted to BASS_FLOOR): harmony stays above it.
        floor = round(self._by_style(BASS_FLOOR))
        bass_top = max((_bass_pitch(token_to_pitch(2, t) + shift, floor)
                        for t in bar.tokens[:, 2] if t >= FIRST_PITCH_TOKEN), default=-1)
        for voice in range(3):
            column = bar.tokens[:, voice]
            name = VOICES[voice]
            for step in np.flatnonzero(column >= FIRST_PITCH_TOKEN):
                end = _note_end(column, step)
                length = end - step
                if end == STEPS_PER_BAR and following is not None:
                    next_column = following.tokens[:, voice]
                    k = 0
                    while k < STEPS_PER_BAR and next_column[k] == HOLD:
                        k += 1
                    length += k
                pitch = token_to_pitch(voice, column[step]) + shift
                if voice == 2:
                    pitch = _bass_pitch(pitch, floor)
                elif voice == 1 and pitch <= bass_top:
                    pitch += 12
                velocity = int(bar.velocities[step, voice])
                notes.append((name, pitch, int(step), int(length), velocity))
                if voice == 1:
                    for extra_pitch in bar.harmony_voicing[harmony_onset]:
                        if bass_top < extra_pitch + shift < pitch:
                            notes.append((name, extra_pitch + shift, int(step), int(length), max(1, velocity - 8)))
                    harmony_onset += 1
        notes.extend(("drums", key, step, 1, velocity) for step, key, velocity in bar.drum_notes)
        notes.sort(key=lambda n: (n[2], VOICES.index(n[0]), n[1]))
        root, quality = chord_parts(bar.chord)
        return ComposedBar(
            track_id=bar.plan.track_id,
            bar_index=bar.bar_index,
            section=bar.section,
            key=bar.plan.key,
            tempo_bpm=bar.plan.tempo,
            chord=chord_name((root + shift) % 12 if root < 12 else root, quality, (bar.plan.tonic, bar.plan.mode)),
            notes=tuple(notes),
            bars_in_track=bar.plan.bars,
            track_index=bar.plan.index,
        )


def _ring_into_rests(column: np.ndarray, steps: int, starts: Iterable[int]) -> None:
    """Each note of `column` (16,) that starts at one of `starts` rings on (HOLD) over up to
    `steps` of the rests after it, up to the next note (holds on the way, such as a lo-fi bass
    onset turned into a hold, do not count)."""
    for start in starts:
        if column[start] < FIRST_PITCH_TOKEN:
            continue
        rung = 0
        for step in range(start + 1, STEPS_PER_BAR):
            if column[step] >= FIRST_PITCH_TOKEN or (column[step] == REST and rung == steps):
                break
            if column[step] == REST:
                column[step] = HOLD
                rung += 1


def _note_end(column: np.ndarray, start: int) -> int:
    """The step after the note that starts at `start` of `column` (16,) and holds on (HOLD)."""
    end = start + 1
    while end < STEPS_PER_BAR and column[end] == HOLD:
        end += 1
    return end


def _sounding_pitches(column: np.ndarray, voice: int) -> np.ndarray:
    """(16,) the MIDI pitch sounding at each step of `column` (tokens of pitched voice index
    `voice`), -1 where it rests or holds a note begun before the bar."""
    pitches = np.full(STEPS_PER_BAR, -1)
    pitch = -1
    for step, token in enumerate(column):
        if token >= FIRST_PITCH_TOKEN:
            pitch = token_to_pitch(voice, token)
        elif token == REST:
            pitch = -1
        pitches[step] = pitch
    return pitches


def _harmony_under_lead(tokens: np.ndarray) -> None:
    """A harmony note of `tokens` (16, 4) held `HARMONY_UNDER_LEAD_STEPS` or longer that sounds
    above the lead at more than half the steps both play moves down an octave, if its voice's
    range reaches."""
    lead = _sounding_pitches(tokens[:, 0], 0)
    column = tokens[:, 1]
    low = PITCH_RANGES["harmony"][0]
    for start in np.flatnonzero(column >= FIRST_PITCH_TOKEN):
        end = _note_end(column, start)
        if end - start < HARMONY_UNDER_LEAD_STEPS:
            continue
        pitch = token_to_pitch(1, column[start])
        under = lead[start:end]
        under = under[under >= 0]
        if under.size and np.mean(pitch > under) > 0.5 and pitch - 12 >= low:
            column[start] -= 12


def _bass_pitch(pitch: int, floor: int) -> int:
    """A bass pitch as played: below `floor` it moves up by octaves."""
    while pitch < floor:
        pitch += 12
    return pitch


def _log_mass(logits: np.ndarray, temperature: float) -> float:
    """Log of the total probability weight of `logits` (V,) at `temperature`, in logit units."""
    return temperature * float(np.logaddexp.reduce(logits / temperature))


def _draw(logits: np.ndarray, temperature: float, uniforms: np.ndarray) -> np.ndarray:
    """One index per row of logits (R, V) at `temperature`, by inverse CDF of `uniforms` (R,)."""
    scaled = logits / temperature
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))  # -inf logits: probability 0
    cumulative = np.cumsum(probs, axis=1)
    cumulative /= cumulative[:, -1:]
    return np.minimum((cumulative < uniforms[:, None]).sum(axis=1), logits.shape[1] - 1)
