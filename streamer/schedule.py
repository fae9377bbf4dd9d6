"""The schedule: programs (a mood at set times), timed checkpoint reloads, and when the periodic
stats line is due (the main loop writes it: `status_snapshot.stats_line`).

Configured in `[schedule]` (see `ScheduleSettings` and deploy/config.example.toml):

    [schedule.mood.night]            # slower tempo, softer drums, more crackle
    tempo_min_bpm = 60.0
    tempo_max_bpm = 68.0
    energy = 0.3
    [schedule.mood.night.effects]
    crackle_per_second = 9.0

    [[schedule.program]]             # 22:00–06:00: mood night
    cron = "0 22 * * *"
    until = "06:00"
    mood = "night"

Rules:
- A program's window opens at each time its cron expression names (classic 5-field cron:
  minute hour day month weekday, 0 or 7 = Sunday, in `schedule.timezone`) and closes at the
  next `until` time of day after that (or `minutes` later). A start inside its own open window
  opens a new window.
- Overlaps: the program whose window opened last plays; on the same start time, the one listed
  later in the file. When it ends, a program whose window is still open plays again.
- While a program plays, its mood changes the composer (temperature, energy and style from the
  next composed bar; a tempo range from the next track) and the effects (from the next rendered
  bar); when no program plays, the settings of the config are back.

Threads: APScheduler's jobs (one worker thread) only decide which program should play and post
requests — "reload", "stats" — for the daemon's main loop. The composer thread applies the mood
before each bar it composes (`tune_composer`), the audio thread before each bar it renders
(`tune_effects`); nothing here touches audio. Which program plays is also decided at once,
without the scheduler, at the daemon's start (`refresh`), so the first bar already has its mood.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from streamer.composer import ComposerMood
from streamer.config import EffectsSettings, MoodSettings, ScheduleSettings, given_keys
from streamer.effects_swap import retune_chain
from streamer.errors import ConfigError
from streamer.status_snapshot import NextProgram, ScheduleStatus

log = logging.getLogger(__name__)

CRON_FIELDS = "minute hour day month weekday"
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # classic cron numbering: 0 (and 7) = Sunday
RELOAD, STATS = "reload", "stats"  # what the scheduler's jobs ask of the daemon's main loop
END_JOB = "program-end"
MIN_STATS_INTERVAL_SECONDS = 1.0


# ----------------------------------------------------------------------------- parsing


def _weekday_names(text: str) -> str:
    """A classic cron weekday field as APScheduler weekday names.

    APScheduler 3 counts 0 as Monday where cron counts 0 (and 7) as Sunday, so numbers are
    translated here; names (sun..sat), ranges (1-5), steps (*/2, 1-5/2) and lists are accepted.
    """
    if text == "*":
        return "*"

    def day(token: str, end: bool) -> int:
        token = token.lower()
        if token.isdigit() and int(token) <= 7:
            return int(token)
        if token in WEEKDAYS:
            return 7 if token == "sun" and end else WEEKDAYS.index(token)  # "sat-sun" ends on day 7
        raise ValueError(f"weekday {text!r}: {token!r} is not 0-7 or sun..sat")

    days: set[int] = set()
    for item in text.split(","):
        span, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"weekday {text!r}: the step after / must be a positive whole number")
        step = int(step_text) if slash else 1
        if span == "*":
            first, last = 0, 6
        else:
            start, dash, end = span.partition("-")
            first = day(start, end=False)
            last = day(end, end=True) if dash else (7 if slash else first)
        if first > last:
            raise ValueError(f"weekday {text!r}: the range {span} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(WEEKDAYS[d] for d in sorted(days))


def cron_trigger(expression: str, tz: tzinfo) -> CronTrigger:
    """A classic cron expression (minute hour day month weekday) as an APScheduler trigger.

    Raises ValueError saying what is wrong. Restricting both the day and the weekday is refused:
    classic cron runs on either, APScheduler only on both, and neither reading is obvious.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields, got {len(fields)}")
    minute, hour, day, month, weekday = fields
    if not day.startswith("*") and not weekday.startswith("*"):
        raise ValueError("restrict the day or the weekday, not both")
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekday_names(weekday),
                           timezone=tz)
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


def time_of_day(text: str) -> time:
    """'HH:MM' or 'HH:MM:SS' (24-hour clock); raises ValueError."""
    match = re.fullmatch(r"(\d{1,2}):(\d\d)(?::(\d\d))?", text.strip())
    if not match:
        raise ValueError(text)
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    return time(hour, minute, second)  # raises ValueError beyond 23:59:59


def schedule_timezone(name: str) -> tzinfo:
    """The zone `schedule.timezone` names; empty = the machine's local time zone."""
    if not name.strip():
        import tzlocal

        try:
            return tzlocal.get_localzone()
        except Exception as exc:  # a broken /etc/localtime or TZ: say which key fixes it
            raise ConfigError(f"schedule.timezone: the machine's local time zone is unknown ({exc}); "
                              "set a zone name such as 'UTC'") from exc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"schedule.timezone: {name!r} is not a time zone name (e.g. 'UTC', 'Europe/Berlin'; "
                          "empty = the machine's local time)") from exc


@dataclass(frozen=True)
class Program:
    """One `[[schedule.program]]`, checked and ready to answer when it plays."""

    index: int  # its place in the file: on the same start time the later one plays
    name: str
    cron: str
    until: time | None  # ends at the next such time of day after its start ...
    minutes: float  # ... or this long after it (when `until` is None)
    mood_name: str
    mood: MoodSettings
    tz: tzinfo = field(compare=False)
    trigger: CronTrigger = field(compare=False, repr=False)

    @property
    def composer_mood(self) -> ComposerMood:
        mood = self.mood
        low, high = mood.tempo_min_bpm, mood.tempo_max_bpm  # both or neither (checked)
        tempo = (low, high) if low is not None and high is not None else None
        return ComposerMood(tempo, mood.temperature, mood.energy, mood.style_blend)

    @property
    def effects_changes(self) -> dict[str, Any]:
        return given_keys(self.mood.effects)

    @property
    def ends(self) -> str:
        if self.until is None:
            return f"for {self.minutes:g} min"
        return f"until {self.until.isoformat('seconds' if self.until.second else 'minutes')}"

    def end_of(self, start: datetime) -> datetime:
        """When the window opened at `start` closes."""
        if self.until is None:
            return (start.astimezone(UTC) + timedelta(minutes=self.minutes)).astimezone(self.tz)
        local = start.astimezone(self.tz)
        end = datetime.combine(local.date(), self.until, tzinfo=self.tz)
        # Compared in UTC: two datetimes of one zone compare as wall-clock times, across DST too.
        if end.astimezone(UTC) <= start.astimezone(UTC):
            end = datetime.combine(local.date() + timedelta(days=1), self.until, tzinfo=self.tz)
        return end

    def last_start(self, now: datetime) -> datetime | None:
        """The latest start at or before `now` whose window could still be open, else None."""
        lookback = timedelta(minutes=self.minutes) if self.until is None else timedelta(days=1)
        # Cron triggers only look forward: probe further back, doubling, until a start turns up...
        step = timedelta(minutes=1)
        while True:
            cursor = max(now - step, now - lookback)
            fire = self.trigger.get_next_fire_time(None, cursor)
            if fire is not None and fire <= now:
                break
            if cursor == now - lookback:
                return None
            step *= 2
        # ... then walk forward to the last one.
        while (following := self.trigger.get_next_fire_time(None, fire + timedelta(seconds=1))) is not None \
                and following <= now:
            fire = following
        return fire

    def window(self, now: datetime) -> tuple[datetime, datetime] | None:
        """(start, end) of the window open at `now`, else None."""
        start = self.last_start(now)
        if start is None:
            return None
        end = self.end_of(start)
        return (start, end) if now < end else None

    def next_start(self, now: datetime) -> datetime | None:
        return self.trigger.get_next_fire_time(None, now + timedelta(microseconds=1))


@dataclass(frozen=True)
class ActiveProgram:
    program: Program
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ParsedSchedule:
    tz: tzinfo
    programs: tuple[Program, ...]
    reload_trigger: CronTrigger | None
    stats_interval_seconds: float


def _cron(expression: str, tz: tzinfo, key: str) -> CronTrigger:
    try:
        trigger = cron_trigger(expression, tz)
    except ValueError as exc:
        raise ConfigError(f"{key}: {expression!r} is not a cron expression ({CRON_FIELDS}): {exc}") from exc
    if trigger.get_next_fire_time(None, datetime.now(tz)) is None:
        raise ConfigError(f"{key}: {expression!r} never fires")
    return trigger


def _check_mood(name: str, mood: MoodSettings) -> None:
    key = f"schedule.mood.{name}"
    low, high = mood.tempo_min_bpm, mood.tempo_max_bpm
    if (low is None) != (high is None):
        missing = "tempo_max_bpm" if high is None else "tempo_min_bpm"
        raise ConfigError(f"{key}.{missing}: missing: set tempo_min_bpm and tempo_max_bpm together "
                          "(equal for a fixed tempo)")
    if low is not None and high is not None and high < low:
        raise ConfigError(f"{key}.tempo_max_bpm: expected at least tempo_min_bpm ({low:g}), got {high:g}")


def parse_schedule(settings: ScheduleSettings) -> ParsedSchedule:
    """Check `[schedule]` beyond what the generic validator knows; every error names its key."""
    tz = schedule_timezone(settings.timezone)
    reload_trigger = _cron(settings.reload_cron, tz, "schedule.reload_cron") if settings.reload_cron.strip() else None
    interval = settings.stats_interval_seconds
    if 0 < interval < MIN_STATS_INTERVAL_SECONDS:
        raise ConfigError(f"schedule.stats_interval_seconds: expected 0 (never) or at least "
                          f"{MIN_STATS_INTERVAL_SECONDS:g}, got {interval:g}")
    for name, mood in settings.mood.items():
        _check_mood(name, mood)
    programs: list[Program] = []
    names: dict[str, int] = {}
    for index, program in enumerate(settings.program):
        key = f"schedule.program[{index}]"
        if not program.cron.strip():
            raise ConfigError(f"{key}.cron: missing: when the program starts ({CRON_FIELDS})")
        trigger = _cron(program.cron, tz, f"{key}.cron")
        until = None
        if program.until and program.minutes:
            raise ConfigError(f"{key}.minutes: set either until or minutes, not both")
        if program.until:
            try:
                until = time_of_day(program.until)
            except ValueError as exc:
                raise ConfigError(f"{key}.until: {program.until!r} is not a time of day (HH:MM or HH:MM:SS, "
                                  "24-hour clock)") from exc
        elif not program.minutes:
            raise ConfigError(f"{key}.until: missing: when the program ends (HH:MM), or set minutes")
        if not program.mood:
            raise ConfigError(f"{key}.mood: missing: the name of a [schedule.mood.NAME] table")
        if program.mood not in settings.mood:
            defined = ", ".join(sorted(settings.mood)) or "none"
            raise ConfigError(f"{key}.mood: {program.mood!r} is not a mood under [schedule.mood] (defined: {defined})")
        name = program.name or program.mood
        if name in names:
            raise ConfigError(f"{key}.name: {name!r} is the name of schedule.program[{names[name]}] too")
        names[name] = index
        programs.append(Program(index, name, program.cron, until, program.minutes, program.mood,
                                settings.mood[program.mood], tz, trigger))
    return ParsedSchedule(tz, tuple(programs), reload_trigger, interval)


def active_program(programs: tuple[Program, ...], now: datetime) -> ActiveProgram | None:
    """The program playing at `now` (aware): the latest-opened open window; ties go to the later one."""
    best: ActiveProgram | None = None
    for program in programs:  # in file order, so `>=` hands a tie to the later program
        window = program.window(now)
        if window is not None and (best is None or window[0] >= best.start):
            best = ActiveProgram(program, *window)
    return best


def next_program(programs: tuple[Program, ...], now: datetime) -> tuple[Program, datetime] | None:
    """The next program start after `now` (ties: the later program), else None."""
    upcoming = [(start, -program.index, program) for program in programs
                if (start := program.next_start(now)) is not None]
    if not upcoming:
        return None
    start, _, program = min(upcoming, key=lambda item: (item[0], item[1]))
    return program, start


def _iso(moment: datetime | None, tz: tzinfo) -> str | None:
    return moment.astimezone(tz).isoformat(timespec="seconds") if moment is not None else None


def describe_mood(program: Program) -> str:
    mood = program.mood
    parts = []
    if mood.tempo_min_bpm is not None:
        parts.append(f"tempo {mood.tempo_min_bpm:g}–{mood.tempo_max_bpm:g} BPM")
    parts += [f"{name} {value:g}" for name in ("energy", "temperature", "style_blend")
              if (value := getattr(mood, name)) is not None]
    parts += [f"{name} {value}" for name, value in program.effects_changes.items()]
    return ", ".join(parts) or "no changes"


def describe_schedule(settings: ScheduleSettings, now: datetime | None = None) -> list[str]:
    """What `chiplofi config check` prints about the schedule (checked settings)."""
    parsed = parse_schedule(settings)
    now = now or datetime.now(UTC)
    stats = f"every {parsed.stats_interval_seconds:g} s" if parsed.stats_interval_seconds else "off"
    lines = [f"schedule: time zone {parsed.tz}; reload {settings.reload_cron or 'never'}; stats line {stats}"]
    active = active_program(parsed.programs, now)
    for program in parsed.programs:
        playing = (f" — playing now, until {_iso(active.end, parsed.tz)}"
                   if active is not None and active.program == program else "")
        lines.append(f"program {program.name}: {program.cron} {program.ends}, mood {program.mood_name} "
                     f"({describe_mood(program)}){playing}")
    return lines


# ----------------------------------------------------------------------------- effects


# ----------------------------------------------------------------------------- the running schedule


class Schedule:
    """The schedule of one daemon (see the module docstring for who calls what, on which thread)."""

    def __init__(self, settings: ScheduleSettings, wake: Callable[[], None] = lambda: None,
                 now: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self._parsed = parse_schedule(settings)
        self._wake = wake
        self._now = now or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._requests: list[str] = []
        self._scheduler: Any = None
        self.active: ActiveProgram | None = None  # replaced whole, read without a lock
        # audio thread: the chain last tuned and the settings it runs
        self._chain: Any = None
        self._chain_settings = EffectsSettings()
        self.effects_applied: dict[str, Any] = {}

    @property
    def scheduler(self) -> Any:
        """The running APScheduler `BackgroundScheduler` (None before `start` and after `stop`)."""
        return self._scheduler

    # -------------------------------------------------------------- jobs (scheduler thread)

    def refresh(self) -> None:
        """Decide which program plays now; the end of its window becomes a job."""
        with self._lock:
            active = active_program(self._parsed.programs, self._now())
            if active != self.active:
                self._log_change(self.active, active)
                self.active = active
            scheduler = self._scheduler
            if scheduler is not None:
                if active is not None:
                    scheduler.add_job(self.refresh, "date", run_date=active.end, id=END_JOB, replace_existing=True)
                elif scheduler.get_job(END_JOB) is not None:
                    scheduler.remove_job(END_JOB)

    def _post(self, request: str) -> None:
        with self._lock:
            if request not in self._requests:
                self._requests.append(request)
        self._wake()

    def take_requests(self) -> list[str]:
        """Main loop: what the jobs asked for since the last call (RELOAD, STATS)."""
        with self._lock:
            requests, self._requests = self._requests, []
        return requests

    def _log_change(self, before: ActiveProgram | None, after: ActiveProgram | None) -> None:
        tz = self._parsed.tz
        if after is None:
            log.info("schedule: program %s ended; the config's settings are back",
                     before.program.name if before else "?")
            return
        log.info("schedule: program %s (mood %s) plays until %s: %s", after.program.name, after.program.mood_name,
                 _iso(after.end, tz), describe_mood(after.program))

    def _install_jobs(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        scheduler, parsed = self._scheduler, self._parsed
        scheduler.remove_all_jobs()
        for program in parsed.programs:
            scheduler.add_job(self.refresh, program.trigger, id=f"program-{program.index}")
        if parsed.reload_trigger is not None:
            scheduler.add_job(self._post, parsed.reload_trigger, args=(RELOAD,), id=RELOAD)
        if parsed.stats_interval_seconds:
            scheduler.add_job(self._post, IntervalTrigger(seconds=parsed.stats_interval_seconds), args=(STATS,),
                              id=STATS)

    def start(self) -> None:
        """Start the jobs (the daemon calls this after the prefill)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not a line per job run
        # However late a job runs (a suspended machine, a busy one), it still runs, once.
        scheduler = BackgroundScheduler(timezone=self._parsed.tz, executors={"default": ThreadPoolExecutor(1)},
                                        job_defaults={"coalesce": True, "max_instances": 1,
                                                      "misfire_grace_time": None})
        with self._lock:
            self._scheduler = scheduler
            self._install_jobs()
            scheduler.start()
        self.refresh()

    def stop(self) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=False)

    def update(self, settings: ScheduleSettings) -> None:
        """A reload's (checked) schedule: new jobs, and which program plays decided again."""
        if settings == self.settings:
            return
        parsed = parse_schedule(settings)
        with self._lock:
            self.settings, self._parsed = settings, parsed
            if self._scheduler is not None:
                self._install_jobs()
        log.info("schedule reloaded: %d programs", len(parsed.programs))
        self.refresh()

    # -------------------------------------------------------------- composer and audio threads

    def composer_mood(self) -> ComposerMood:
        active = self.active
        return active.program.composer_mood if active is not None else ComposerMood()

    def tune_composer(self, composer: object) -> None:
        """Composer thread, before each bar: the mood that should play now (composers without
        `set_mood` are left alone)."""
        set_mood = getattr(composer, "set_mood", None)
        if set_mood is not None:
            set_mood(self.composer_mood())

    def tuned_loader(self, loader: Callable[[str, int], Any]) -> Callable[[str, int], Any]:
        """`loader` whose composers get the mood before their first bar (it plans their first track)."""
        def load(setting: str, seed: int) -> Any:
            composer = loader(setting, seed)
            self.tune_composer(composer)
            return composer
        return load

    def settings_of(self, chain: Any, base: EffectsSettings) -> EffectsSettings:
        """The settings `chain` runs: a mood's, if it is the chain this schedule last retuned to."""
        return self._chain_settings if chain is self._chain else base

    def tune_effects(self, chain: Any, base: EffectsSettings, sample_rate: int, seed: int) -> Any:
        """Audio thread, before each bar: `chain`, or its retuned successor when the mood changed.

        `base` is the config's [effects]; a chain not seen before was built from it (at the start,
        or swapped in by a reload).
        """
        if chain is not self._chain:
            self._chain, self._chain_settings, self.effects_applied = chain, base, {}
        active = self.active
        changes = active.program.effects_changes if active is not None else {}
        wanted = dataclasses.replace(base, **changes)
        current = self._chain_settings
        if wanted == current:
            return chain
        retuned = retune_chain(chain, current, wanted, sample_rate, seed)
        changed = [f"{key} {getattr(current, key)} → {getattr(wanted, key)}"
                   for key in (f.name for f in dataclasses.fields(wanted))
                   if getattr(current, key) != getattr(wanted, key)]
        log.info("schedule: effects from this bar: %s", ", ".join(changed))
        self._chain, self._chain_settings, self.effects_applied = retuned, wanted, changes
        return retuned

    # -------------------------------------------------------------- status

    def status(self) -> ScheduleStatus:
        parsed, active = self._parsed, self.active
        now = self._now()
        upcoming = next_program(parsed.programs, now)
        reload_at = parsed.reload_trigger.get_next_fire_time(None, now) if parsed.reload_trigger else None
        mood: dict[str, Any] = {}
        if active is not None:
            mood = {k: v for k, v in dataclasses.asdict(active.program.mood).items()
                    if v is not None and k != "effects"}
        return ScheduleStatus(
            timezone=str(parsed.tz),
            program=active.program.name if active else None,
            mood=active.program.mood_name if active else None,
            since=_iso(active.start, parsed.tz) if active else None,
            until=_iso(active.end, parsed.tz) if active else None,
            composer=mood,
            effects=dict(active.program.effects_changes) if active else {},
            effects_applied=dict(self.effects_applied),
            next=NextProgram(upcoming[0].name, _iso(upcoming[1], parsed.tz)) if upcoming else None,
            next_reload=_iso(reload_at, parsed.tz),
            stats_interval_seconds=parsed.stats_interval_seconds,
        )
