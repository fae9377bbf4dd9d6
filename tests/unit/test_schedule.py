"""streamer.schedule: config checks that name the key, which program plays at a given moment
(injected clocks, no waiting for cron times), moods on real composers and a real effects chain."""

import dataclasses
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from streamer.composer import ComposerMood, ModelComposer, RuleBasedComposer, load_composer
from streamer.config import (
    MOOD_EXAMPLE,
    PROGRAM_EXAMPLE,
    Config,
    EffectsSettings,
    MoodSettings,
    ProgramSettings,
    settings_from_mapping,
)
from streamer.effects import EffectsChain, LoudnessNormalizer
from streamer.effects_swap import Crossfade
from streamer.errors import ConfigError
from streamer.schedule import (
    Schedule,
    active_program,
    cron_trigger,
    next_program,
    parse_schedule,
)
from streamer.status_snapshot import NextProgram
from streamer.stream_config import CliOverrides, describe_config, load_stream_config

ROOT = Path(__file__).resolve().parents[2]
NIGHT = """
[schedule.mood.night]
tempo_min_bpm = 60.0
tempo_max_bpm = 66.0
energy = 0.3
[schedule.mood.night.effects]
crackle_per_second = 9.0
lowpass_hz = 1000.0
[schedule.mood.late]
energy = 0.1
"""


def schedule_from(toml: str):
    """The checked ScheduleSettings of a config holding `toml`."""
    config = settings_from_mapping(Config, tomllib.loads(toml))
    parse_schedule(config.schedule)
    return config.schedule


def programs_of(toml: str, tz: str = "UTC"):
    return parse_schedule(schedule_from(f'[schedule]\ntimezone = "{tz}"\n' + NIGHT + toml)).programs


def at(text: str, tz: str = "UTC") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


# ----------------------------------------------------------------------------- config errors


def _config_file(tmp_path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


PROGRAM = '[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\nmood = "night"\n'


@pytest.mark.parametrize("toml,message", [
    # the example the issue gives, word for word
    (PROGRAM + PROGRAM.replace("[[schedule.program]]", '[[schedule.program]]\nname = "b"') +
     '[[schedule.program]]\nname = "x"\ncron = "x y z"\nuntil = "06:00"\nmood = "night"\n',
     "schedule.program[2].cron: 'x y z' is not a cron expression (minute hour day month weekday): "
     "expected 5 fields, got 3"),
    ('[[schedule.program]]\ncron = "61 22 * * *"\nuntil = "06:00"\nmood = "night"\n',
     "schedule.program[0].cron: '61 22 * * *' is not a cron expression"),
    ('[[schedule.program]]\ncron = "0 22 * * 8"\nuntil = "06:00"\nmood = "night"\n',
     "schedule.program[0].cron: '0 22 * * 8' is not a cron expression"),
    ('[[schedule.program]]\ncron = "0 22 * * 5-1"\nuntil = "06:00"\nmood = "night"\n',
     "schedule.program[0].cron: '0 22 * * 5-1' is not a cron expression (minute hour day month weekday): "
     "weekday '5-1': the range 5-1 runs backwards"),
    ('[[schedule.program]]\ncron = "0 22 13 * fri"\nuntil = "06:00"\nmood = "night"\n',
     "schedule.program[0].cron: '0 22 13 * fri' is not a cron expression (minute hour day month weekday): "
     "restrict the day or the weekday, not both"),
    ('[[schedule.program]]\ncron = "0 0 31 2 *"\nuntil = "06:00"\nmood = "night"\n',
     "schedule.program[0].cron: '0 0 31 2 *' never fires"),
    ('[[schedule.program]]\nuntil = "06:00"\nmood = "night"\n', "schedule.program[0].cron: missing"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "25:00"\nmood = "night"\n',
     "schedule.program[0].until: '25:00' is not a time of day"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "6pm"\nmood = "night"\n',
     "schedule.program[0].until: '6pm' is not a time of day"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nmood = "night"\n', "schedule.program[0].until: missing"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\nminutes = 30\nmood = "night"\n',
     "schedule.program[0].minutes: set either until or minutes, not both"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nminutes = -5\nmood = "night"\n',
     "schedule.program[0].minutes: expected a number from 0 to 10080, got -5"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\n', "schedule.program[0].mood: missing"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\nmood = "nite"\n',
     "schedule.program[0].mood: 'nite' is not a mood under [schedule.mood] (defined: late, night)"),
    ('[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\nmood = "night"\nstart = "22:00"\n',
     "schedule.program[0].start: unknown key"),
    (PROGRAM * 2, "schedule.program[1].name: 'night' is the name of schedule.program[0] too"),
    ('[schedule]\nprogram = "night"\n', "schedule.program: expected an array of tables ([[schedule.program]])"),
    ('[schedule.mood.night]\ntempo = 60\n', "schedule.mood.night.tempo: unknown key"),
    ('[schedule.mood.night]\nenergy = 2\n', "schedule.mood.night.energy: expected a number from 0 to 1, got 2"),
    ('[schedule.mood.night]\ntemperature = "hot"\n', "schedule.mood.night.temperature: expected a number"),
    ('[schedule.mood.other.effects]\nhiss = -50\n', "schedule.mood.other.effects.hiss: unknown key"),
    ('[schedule.mood.other.effects]\nhiss_db = 0\n',
     "schedule.mood.other.effects.hiss_db: expected a number from -120 to -20, got 0"),
    ('[schedule.mood.solo]\ntempo_min_bpm = 60\n', "schedule.mood.solo.tempo_max_bpm: missing"),
    ('[schedule.mood.solo]\ntempo_min_bpm = 70\ntempo_max_bpm = 60\n',
     "schedule.mood.solo.tempo_max_bpm: expected at least tempo_min_bpm (70), got 60"),
    ('[schedule.mood.solo]\ntempo_min_bpm = 20\ntempo_max_bpm = 60\n',
     "schedule.mood.solo.tempo_min_bpm: expected a number from 40 to 200"),
    ('[schedule]\nreload_cron = "every night"\n', "schedule.reload_cron: 'every night' is not a cron expression"),
    ('[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone: 'Mars/Olympus' is not a time zone name"),
    ('[schedule]\nstats_interval_seconds = 0.5\n',
     "schedule.stats_interval_seconds: expected 0 (never) or at least 1, got 0.5"),
    ('[schedule]\nstats_interval_seconds = -1\n', "schedule.stats_interval_seconds: expected a number from 0"),
])
def test_every_invalid_schedule_names_the_key(tmp_path, toml, message):
    moods = "" if "[schedule.mood.night]" in toml else NIGHT
    with pytest.raises(ConfigError) as error:
        load_stream_config(_config_file(tmp_path, moods + toml), CliOverrides(), {})
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_the_documented_example_is_valid_and_documents_every_key():
    shipped = (ROOT / "deploy" / "config.example.toml").read_text()
    for block in (MOOD_EXAMPLE, PROGRAM_EXAMPLE):
        commented = "".join(f"# {line}".rstrip() + "\n" for line in block.splitlines())
        assert commented in shipped
    settings = schedule_from(MOOD_EXAMPLE + PROGRAM_EXAMPLE)
    assert settings.program[0] == ProgramSettings("night", "0 22 * * *", "06:00", 0.0, "night")
    mood = settings.mood["night"]
    assert (mood.tempo_min_bpm, mood.tempo_max_bpm, mood.energy) == (60.0, 68.0, 0.3)
    keys = {f.name for cls in (MoodSettings, ProgramSettings) for f in dataclasses.fields(cls)}
    for key in keys:
        assert re.search(rf"^(# )?{key} = |\[schedule\.mood\.night\.{key}\]", MOOD_EXAMPLE + PROGRAM_EXAMPLE,
                         re.M), key


def test_config_check_describes_the_programs(tmp_path):
    path = _config_file(tmp_path, '[schedule]\ntimezone = "UTC"\nreload_cron = "30 4 * * *"\n' + NIGHT + PROGRAM)
    lines = describe_config(load_stream_config(path, CliOverrides(), {}), {})
    assert "schedule: time zone UTC; reload 30 4 * * *; stats line every 900 s" in lines
    assert any(line.startswith("program night: 0 22 * * * until 06:00, mood night (tempo 60–66 BPM, energy 0.3, "
                               "lowpass_hz 1000.0, crackle_per_second 9.0)") for line in lines), lines


# ----------------------------------------------------------------------------- cron and windows


def test_weekdays_count_from_sunday_as_in_cron():
    monday = datetime(2024, 1, 1, tzinfo=UTC)  # 2024-01-01 is a Monday
    for weekday, expected in (("0", 7), ("7", 7), ("sun", 7), ("1", 1), ("6", 6), ("1-5", 1), ("sat-sun", 6),
                              ("5-7", 5), ("*/2", 2), ("fri,sun", 5)):
        fire = cron_trigger(f"0 22 * * {weekday}", UTC).get_next_fire_time(None, monday)
        assert fire.day == expected, (weekday, fire)


def test_a_night_program_plays_from_its_start_to_its_end():
    (night,) = programs_of(PROGRAM)
    assert active_program((night,), at("2024-05-10 21:59:59")) is None
    active = active_program((night,), at("2024-05-10 22:00:00"))
    assert active.program.name == "night" and active.end == at("2024-05-11 06:00")
    active = active_program((night,), at("2024-05-11 03:00"))
    assert (active.start, active.end) == (at("2024-05-10 22:00"), at("2024-05-11 06:00"))
    assert active_program((night,), at("2024-05-11 05:59:59")) is not None
    assert active_program((night,), at("2024-05-11 06:00")) is None
    assert active_program((night,), at("2024-05-11 12:00")) is None


def test_minutes_weekdays_and_restarts_inside_a_window():
    (lunch,) = programs_of('[[schedule.program]]\ncron = "30 12 * * 1-5"\nminutes = 90\nmood = "late"\n')
    assert active_program((lunch,), at("2024-05-10 13:59")) is not None  # a Friday
    assert active_program((lunch,), at("2024-05-10 14:00")) is None
    assert active_program((lunch,), at("2024-05-11 13:00")) is None  # Saturday
    (hourly,) = programs_of('[[schedule.program]]\ncron = "0 * * * *"\nminutes = 90\nmood = "late"\n')
    active = active_program((hourly,), at("2024-05-10 10:45"))
    assert (active.start, active.end) == (at("2024-05-10 10:00"), at("2024-05-10 11:30"))
    (friday,) = programs_of('[[schedule.program]]\ncron = "0 22 * * 5"\nuntil = "02:00"\nmood = "late"\n')
    assert active_program((friday,), at("2024-05-11 01:00")).start == at("2024-05-10 22:00")
    assert active_program((friday,), at("2024-05-11 23:00")) is None


def test_until_follows_the_time_zone_across_a_dst_change():
    (night,) = programs_of(PROGRAM, tz="Europe/Berlin")
    # 2024-03-31: clocks go from 02:00 to 03:00 in Berlin; the night is an hour shorter.
    active = active_program((night,), at("2024-03-31 05:59", "Europe/Berlin"))
    assert active is not None and active.end.astimezone(UTC) - active.start.astimezone(UTC) == timedelta(hours=7)
    assert active_program((night,), at("2024-03-31 06:00", "Europe/Berlin")) is None
    # The same instant is 13:30 UTC and 22:30 in Tokyo: only the Tokyo night plays.
    instant = at("2024-05-10 13:30")
    assert active_program(programs_of(PROGRAM, tz="Asia/Tokyo"), instant) is not None
    assert active_program(programs_of(PROGRAM), instant) is None


def test_overlaps_the_program_started_last_plays_and_ties_go_to_the_later_one():
    late = '[[schedule.program]]\nname = "late"\ncron = "0 1 * * *"\nuntil = "03:00"\nmood = "late"\n'
    for order in (PROGRAM + late, late + PROGRAM):
        programs = programs_of(order)
        assert active_program(programs, at("2024-05-10 23:00")).program.name == "night"
        assert active_program(programs, at("2024-05-11 02:00")).program.name == "late"  # started last
        resumed = active_program(programs, at("2024-05-11 04:00"))  # late ended; night still open
        assert resumed.program.name == "night" and resumed.start == at("2024-05-10 22:00")
    same_start = '[[schedule.program]]\nname = "party"\ncron = "0 22 * * *"\nuntil = "23:00"\nmood = "late"\n'
    assert active_program(programs_of(PROGRAM + same_start), at("2024-05-10 22:30")).program.name == "party"
    assert active_program(programs_of(same_start + PROGRAM), at("2024-05-10 22:30")).program.name == "night"
    assert active_program(programs_of(same_start + PROGRAM), at("2024-05-10 23:30")).program.name == "night"
    upcoming, starts = next_program(programs_of(PROGRAM + same_start), at("2024-05-10 12:00"))
    assert upcoming.name == "party" and starts == at("2024-05-10 22:00")


# ----------------------------------------------------------------------------- the running schedule


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_schedule_status_and_composer_mood_follow_the_clock():
    clock = Clock(at("2024-05-10 23:00"))
    schedule = Schedule(schedule_from('[schedule]\ntimezone = "UTC"\n' + NIGHT + PROGRAM), now=clock)
    assert schedule.status().program is None  # nothing decided before refresh
    schedule.refresh()
    status = schedule.status()
    assert status.program == "night" and status.mood == "night"
    assert status.since == "2024-05-10T22:00:00+00:00" and status.until == "2024-05-11T06:00:00+00:00"
    assert status.composer == {"tempo_min_bpm": 60.0, "tempo_max_bpm": 66.0, "energy": 0.3}
    assert status.effects == {"crackle_per_second": 9.0, "lowpass_hz": 1000.0}
    assert status.next == NextProgram("night", "2024-05-11T22:00:00+00:00")
    composer = RuleBasedComposer(seed=5)
    schedule.tune_composer(composer)
    assert composer.mood == ComposerMood((60.0, 66.0), None, 0.3, None)
    first_track = [composer.next_bar() for _ in range(composer.track_bars)]
    assert all(60.0 <= bar.tempo_bpm <= 66.0 for bar in first_track)
    clock.now = at("2024-05-11 06:00")
    schedule.refresh()
    assert schedule.status().program is None and schedule.status().effects == {}
    schedule.tune_composer(composer)
    assert composer.mood == ComposerMood()
    tempos = {composer.next_bar().tempo_bpm for _ in range(3 * composer.track_bars)}
    assert all(72.0 <= tempo <= 90.0 for tempo in tempos)  # the rule-based composer's own range again


def test_jobs_only_post_requests_and_wake_the_main_loop():
    woken = []
    schedule = Schedule(schedule_from("[schedule]\nstats_interval_seconds = 1\n"), wake=lambda: woken.append(1))
    schedule._post("stats")
    schedule._post("reload")
    schedule._post("stats")
    assert schedule.take_requests() == ["stats", "reload"] and len(woken) == 3
    assert schedule.take_requests() == []


def test_model_composer_follows_the_mood_and_reverts(tmp_path):
    from models.debug import write_debug_checkpoint

    composer = load_composer(str(write_debug_checkpoint(tmp_path / "ckpt", seed=0)), seed=3)
    assert isinstance(composer, ModelComposer)
    model = composer._composer
    loaded = model.controls
    composer.set_mood(ComposerMood((50.0, 52.0), temperature=0.5, energy=0.2, style_blend=0.9))
    assert (model.controls.temperature, model.controls.energy, model.controls.style_blend) == (0.5, 0.2, 0.9)
    tracks: dict[str, float] = {}  # track id → its tempo
    for _ in range(300):
        bar = composer.next_bar()
        tracks.setdefault(bar.track_id, bar.tempo_bpm)
        if len(tracks) == 3:
            break
    assert len(tracks) == 3 and all(50.0 <= tempo <= 52.0 for tempo in tracks.values()), tracks
    assert len(set(tracks.values())) >= 2  # each track draws its own tempo in the range
    composer.set_mood(ComposerMood())
    assert model.controls == loaded


# ----------------------------------------------------------------------------- effects


QUIET = EffectsSettings(crackle_per_second=0.0, surface_noise_db=-120.0, dust_per_second=0.0, hiss_db=-120.0,
                        wow_depth_cents=0.0, flutter_depth_cents=0.0)


def _sine(seconds: float, freq: float = 440.0, amplitude: float = 0.05) -> np.ndarray:
    t = np.arange(int(seconds * 44100)) / 44100
    tone = amplitude * np.sin(2 * np.pi * freq * t)
    return np.stack([tone, tone], axis=1).astype(np.float32)  # (frames, 2)


def test_a_mood_retunes_the_effects_on_a_bar_boundary_without_a_jump():
    clock = Clock(at("2024-05-10 23:00"))
    toml = '[schedule]\ntimezone = "UTC"\n[schedule.mood.dark.effects]\nlowpass_hz = 2500.0\nhighpass_hz = 50.0\n' \
           '[[schedule.program]]\ncron = "0 22 * * *"\nuntil = "06:00"\nmood = "dark"\n'
    schedule = Schedule(schedule_from(toml), now=clock)
    chain = EffectsChain.from_settings(QUIET, 44100, 0)
    assert schedule.tune_effects(chain, QUIET, 44100, 0) is chain  # no program yet
    tone = _sine(6.0)
    before = chain.process(tone[:4 * 44100])  # the loudness follower settles on the quiet tone
    loudness = next(stage for stage in chain.effects if isinstance(stage, LoudnessNormalizer))
    gain = loudness.gain_db
    assert gain > 10.0
    schedule.refresh()
    retuned = schedule.tune_effects(chain, QUIET, 44100, 0)
    assert retuned is not chain and schedule.effects_applied == {"highpass_hz": 50.0, "lowpass_hz": 2500.0}
    assert loudness in retuned.effects  # carried over with its state: the gain does not restart at 0 dB
    assert any(isinstance(stage, Crossfade) for stage in retuned.effects)  # the tone filter fades over
    assert schedule.tune_effects(retuned, QUIET, 44100, 0) is retuned  # nothing more to do
    after = retuned.process(tone[4 * 44100:])
    assert abs(loudness.gain_db - gain) < 1.0
    joined = np.concatenate([before, after])[:, 0]
    steady = np.abs(np.diff(joined[3 * 44100:4 * 44100])).max()
    around = np.abs(np.diff(joined[4 * 44100 - 4410:4 * 44100 + 4410])).max()
    assert around <= 1.1 * steady  # no click where the settings changed
    rms = [float(np.sqrt((part ** 2).mean())) for part in (before[-44100:], after[4410:44100])]
    assert abs(20 * np.log10(rms[1] / rms[0])) < 1.0  # and no jump in level

    clock.now = at("2024-05-11 07:00")
    schedule.refresh()
    back = schedule.tune_effects(retuned, QUIET, 44100, 0)
    assert back is not retuned and schedule.effects_applied == {} and loudness in back.effects


def test_a_reload_swapping_the_chain_gets_the_mood_again():
    clock = Clock(at("2024-05-10 23:00"))
    schedule = Schedule(schedule_from('[schedule]\ntimezone = "UTC"\n' + NIGHT + PROGRAM), now=clock)
    schedule.refresh()
    first = schedule.tune_effects(EffectsChain.from_settings(QUIET, 44100, 0), QUIET, 44100, 0)
    assert schedule.effects_applied == {"crackle_per_second": 9.0, "lowpass_hz": 1000.0}
    reloaded_base = dataclasses.replace(QUIET, hiss_db=-60.0)
    swapped = EffectsChain.from_settings(reloaded_base, 44100, 1)  # what a reload builds from the new [effects]
    retuned = schedule.tune_effects(swapped, reloaded_base, 44100, 1)
    assert retuned is not swapped and retuned is not first
    assert schedule._chain_settings == dataclasses.replace(reloaded_base, crackle_per_second=9.0, lowpass_hz=1000.0)


def test_lowpass_mood_darkens_the_sound():
    chain = EffectsChain.from_settings(QUIET, 44100, 0)
    schedule = Schedule(schedule_from('[schedule]\ntimezone = "UTC"\n' + NIGHT + PROGRAM),
                        now=Clock(at("2024-05-10 23:00")))
    schedule.refresh()
    dark = schedule.tune_effects(chain, QUIET, 44100, 0)
    noise = np.random.default_rng(0).normal(0, 0.05, (4 * 44100, 2)).astype(np.float32)

    def high_share(out):
        spectrum = np.abs(np.fft.rfft(out[44100:, 0])) ** 2
        freqs = np.fft.rfftfreq(len(out) - 44100, 1 / 44100)
        return spectrum[freqs > 4000].sum() / spectrum.sum()
    plain = EffectsChain.from_settings(QUIET, 44100, 0).process(noise)
    assert high_share(dark.process(noise)) < 0.1 * high_share(plain)
