"""Four voices written as one MIDI file: named instruments, tempo, 4/4 and the key signature.

Torch-free on purpose: offline generation (`models.generate`) and the stream's track archive
(`streamer.archive`) write their tracks with it, so a track from either reads the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.midi_lib import pretty_midi
from models.theory import MINOR, parse_key
from models.tokens import STEPS_PER_BEAT
from models.voices import VOICES

# General MIDI programs for players without chiplofi's SoundFont (square lead, e-piano,
# synth bass); the names are what chiplofi's renderer goes by.
PROGRAMS = {"lead": 80, "harmony": 4, "bass": 38, "drums": 0}

StepNote = tuple[str, int, float, float, int]  # (voice, pitch, start_step, length_steps, velocity); 16th steps
# from the start of the track


def voices_to_midi(notes: Iterable[StepNote], tempo_bpm: float, key: str) -> pretty_midi.PrettyMIDI:
    """A PrettyMIDI with the instruments `lead`, `harmony`, `bass`, `drums` (percussion), in this
    order and always all four, at `tempo_bpm`, in 4/4 and in `key` ('A minor'; ModelError if
    unknown). Pitched notes last at least one step; drum hits half a step."""
    seconds_per_step = 60.0 / float(tempo_bpm) / STEPS_PER_BEAT
    midi = pretty_midi.PrettyMIDI(initial_tempo=float(tempo_bpm), resolution=480)
    midi.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    tonic, mode = parse_key(key)
    midi.key_signature_changes.append(pretty_midi.KeySignature(tonic + (12 if mode == MINOR else 0), 0.0))
    instruments = {voice: pretty_midi.Instrument(PROGRAMS[voice], is_drum=voice == "drums", name=voice)
                   for voice in VOICES}
    for voice, pitch, start, length, velocity in notes:
        begin = start * seconds_per_step
        if voice == "drums":
            end = begin + 0.5 * seconds_per_step
        else:
            end = (start + max(1, length)) * seconds_per_step
        instruments[voice].notes.append(pretty_midi.Note(int(velocity), int(pitch), begin, end))
    for voice in VOICES:
        instruments[voice].notes.sort(key=lambda n: (n.start, n.pitch))
        midi.instruments.append(instruments[voice])
    return midi
