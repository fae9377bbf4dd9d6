"""Track titles: a short readable name for every track, made from its track id alone.

The same id always gives the same title (on the video, the status page, /status, the archive
and the log), on any machine and in any run: the word choices come from a hash of the id, not
from Python's per-process `hash()` nor from any random state. No network, no model.
"""

from __future__ import annotations

import hashlib

# Lo-fi and 8-bit flavoured words; short, so a title fits one line of the video at any size.
ADJECTIVES = (
    "Amber", "Analog", "Blue", "Bright", "Cobalt", "Cozy", "Crimson", "Dusty", "Faded", "Foggy",
    "Gentle", "Golden", "Hazy", "Hidden", "Hollow", "Lazy", "Little", "Lonely", "Lost", "Low",
    "Lunar", "Mellow", "Midnight", "Misty", "Neon", "Old", "Pale", "Paper", "Pixel", "Quiet",
    "Rainy", "Rusty", "Sleepy", "Slow", "Soft", "Silver", "Still", "Sunday", "Velvet", "Warm",
    "Wandering", "Winter", "Distant", "Secret", "Tiny", "Tired", "Violet", "Wistful",
)
NOUNS = (
    "Arcade", "Attic", "Balcony", "Bus Stop", "Cartridge", "Cassette", "Castle", "Cloud", "Comet",
    "Corridor", "Dungeon", "Echo", "Evening", "Forest", "Garden", "Harbor", "Highway", "Island",
    "Lantern", "Library", "Meadow", "Memory", "Moon", "Morning", "Ocean", "Orchard", "Overworld",
    "Pixel", "Postcard", "Puddle", "Rain", "River", "Rooftop", "Save Point", "Signal", "Skyline",
    "Snowfall", "Sprite", "Station", "Streetlight", "Sunset", "Tape", "Tea", "Tower", "Town",
    "Train", "Village", "Window",
)
PLACES = (
    "after School", "at Dusk", "at Night", "in June", "in the Rain", "on Tape", "Revisited",
    "till Dawn", "under Snow", "with Friends",
)


def _picks(track_id: str, *sizes: int) -> list[int]:
    """One index below each size, from a stable hash of the id (blake2b, not hash())."""
    value = int.from_bytes(hashlib.blake2b(track_id.encode("utf-8"), digest_size=16).digest(), "big")
    picks = []
    for size in sizes:
        value, index = divmod(value, size)
        picks.append(index)
    return picks


def track_title(track_id: str) -> str:
    """The title of a track: 'Adjective Noun', one in four with a closing phrase ('… at Dusk')."""
    if not track_id:
        return ""
    adjective, noun, phrase, form = _picks(track_id, len(ADJECTIVES), len(NOUNS), len(PLACES), 4)
    words = [ADJECTIVES[adjective], NOUNS[noun]]
    if words[0] == words[1]:  # "Pixel Pixel"
        words[1] = NOUNS[(noun + 1) % len(NOUNS)]
    title = " ".join(words)
    return f"{title} {PLACES[phrase]}" if form == 0 else title
