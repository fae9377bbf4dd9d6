"""chiplofi.sf2 as a file: RIFF structure, hydra records, loops, reproducibility, error path.

Read with our own small RIFF walker (independent of the writer in soundfonts/build.py) and with
sf2utils; no FluidSynth here (see tests/integration/test_soundfont_audio.py for the sound).
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sf2utils.sf2parse import Sf2File

import soundfonts
from soundfonts import build
from soundfonts.build import GM_DRUM_MAP, build_soundfont, soundfont_bytes
from streamer.errors import SoundFontError

SF2 = soundfonts.SOUNDFONT_PATH
REPO = Path(__file__).resolve().parents[2]
PITCHED = ["pulse12", "pulse25", "pulse50", "triangle", "keys", "noise_long", "noise_short"]
DRUM_PIECES = ["kick", "snare", "closed_hat", "open_hat", "tom", "cymbal", "shaker"]
SAMPLES = ["pulse12", "pulse25", "pulse50", "triangle", "noise_long", "noise_short",
           "kick", "snare", "closed_hat", "open_hat", "tom"]
LOOPED_SAMPLES = SAMPLES[:6]
ENVELOPE_GENS = {34, 36, 37, 38}  # attack, decay, sustain, release of the volume envelope


# --- a tiny independent SF2 reader ---


def riff_tree(data: bytes) -> dict:
    """{'INFO': {tag: bytes}, 'sdta': {...}, 'pdta': {...}} after checking every size field."""
    assert data[:4] == b"RIFF" and data[8:12] == b"sfbk"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8, "RIFF size field"
    lists, pos = {}, 12
    while pos < len(data):
        tag, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        assert tag == b"LIST", tag
        kind = data[pos + 8:pos + 12].decode()
        sub, spos, end = {}, pos + 12, pos + 8 + size
        while spos < end:
            stag, ssize = data[spos:spos + 4].decode(), struct.unpack_from("<I", data, spos + 4)[0]
            sub[stag] = data[spos + 8:spos + 8 + ssize]
            spos += 8 + ssize + (ssize % 2)
        assert spos == end, f"sub-chunks of {kind} overrun the LIST"
        lists[kind] = sub
        pos = end + (size % 2)
    assert pos == len(data)
    return lists


def records(raw: bytes, fmt: str) -> list[tuple]:
    size = struct.calcsize(fmt)
    assert len(raw) % size == 0, f"chunk of {len(raw)} bytes is not a whole number of {fmt} records"
    return [struct.unpack_from(fmt, raw, i) for i in range(0, len(raw), size)]


def name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii")


@pytest.fixture(scope="module")
def data() -> bytes:
    return SF2.read_bytes()


@pytest.fixture(scope="module")
def tree(data) -> dict:
    return riff_tree(data)


@pytest.fixture(scope="module")
def hydra(tree) -> dict:
    p = tree["pdta"]
    assert list(p) == ["phdr", "pbag", "pmod", "pgen", "inst", "ibag", "imod", "igen", "shdr"]
    return {
        "phdr": records(p["phdr"], "<20sHHHIII"),
        "pbag": records(p["pbag"], "<HH"),
        "pmod": records(p["pmod"], "<HHhHH"),
        "pgen": records(p["pgen"], "<Hh"),
        "inst": records(p["inst"], "<20sH"),
        "ibag": records(p["ibag"], "<HH"),
        "imod": records(p["imod"], "<HHhHH"),
        "igen": records(p["igen"], "<Hh"),
        "shdr": records(p["shdr"], "<20sIIIIIBbHH"),
    }


@pytest.fixture(scope="module")
def smpl(tree) -> np.ndarray:
    return np.frombuffer(tree["sdta"]["smpl"], dtype="<i2")


def zones(hydra, kind: str) -> dict[str, list[dict[int, int]]]:
    """Name -> list of zones, each {generator: amount (raw word for ranges)}."""
    hdr, bag, gen = ("phdr", "pbag", "pgen") if kind == "p" else ("inst", "ibag", "igen")
    items = hydra[hdr]
    out = {}
    for i, rec in enumerate(items[:-1]):
        first, last = rec[-4] if kind == "p" else rec[1], items[i + 1][-4 if kind == "p" else 1]
        zs = []
        for b in range(first, last):
            g0, g1 = hydra[bag][b][0], hydra[bag][b + 1][0]
            zs.append({op: amt & 0xFFFF if op in (43, 44) else amt
                       for op, amt in hydra[gen][g0:g1]})
        out[name(rec[0])] = zs
    return out


# --- structure ---


def test_committed_file_is_small_and_has_the_info_sdta_pdta_lists(data, tree):
    assert len(data) < 1_000_000
    assert list(tree) == ["INFO", "sdta", "pdta"]
    info = tree["INFO"]
    assert struct.unpack("<HH", info["ifil"]) == (2, 1)
    assert name(info["isng"]) == "EMU8000"
    assert name(info["INAM"]) == "chiplofi 8-bit"
    for tag, raw in info.items():
        if tag != "ifil":
            assert raw.endswith(b"\0") and len(raw) % 2 == 0, tag
    assert list(tree["sdta"]) == ["smpl"]


def test_terminal_records_close_every_hydra_list(hydra):
    phdr, inst, shdr = hydra["phdr"], hydra["inst"], hydra["shdr"]
    assert name(phdr[-1][0]) == "EOP" and phdr[-1][3] == len(hydra["pbag"]) - 1
    assert name(inst[-1][0]) == "EOI" and inst[-1][1] == len(hydra["ibag"]) - 1
    assert name(shdr[-1][0]) == "EOS"
    assert hydra["pbag"][-1] == (len(hydra["pgen"]) - 1, len(hydra["pmod"]) - 1)
    assert hydra["ibag"][-1] == (len(hydra["igen"]) - 1, len(hydra["imod"]) - 1)
    for kind in ("pmod", "imod"):
        assert hydra[kind][-1] == (0, 0, 0, 0, 0)
    for kind in ("pgen", "igen"):
        assert hydra[kind][-1] == (0, 0)
    # bag and generator indices never go backwards
    for seq in ([r[3] for r in phdr], [r[1] for r in inst], [b[0] for b in hydra["ibag"]],
                [b[0] for b in hydra["pbag"]], [b[1] for b in hydra["ibag"]]):
        assert seq == sorted(seq)


def test_presets_follow_the_contract_in_soundfonts_init(hydra):
    got = {name(r[0]): (r[2], r[1]) for r in hydra["phdr"][:-1]}
    assert got == soundfonts.PRESETS


def test_samples_are_followed_by_46_zeros_and_have_valid_loops(hydra, smpl):
    shdr = hydra["shdr"][:-1]
    assert [name(r[0]) for r in shdr] == SAMPLES
    prev_end = 0
    for rec in shdr:
        sname, start, end, loop_start, loop_end, rate, root, corr, link, stype = rec
        sname = name(sname)
        assert start >= prev_end and end - start >= 48, sname
        assert not smpl[end:end + 46].any(), f"{sname}: needs 46 zero samples after its end"
        assert end + 46 <= len(smpl)
        assert start + 8 <= loop_start < loop_end <= end - 8, sname
        assert (corr, link, stype) == (0, 0, 1), sname
        prev_end = end + 46
    assert prev_end == len(smpl)


@pytest.mark.parametrize("sample", LOOPED_SAMPLES)
def test_loops_are_seamless_and_dc_free(hydra, smpl, sample):
    rec = next(r for r in hydra["shdr"] if name(r[0]) == sample)
    _, start, end, ls, le, *_ = rec
    wave = smpl[start:end].astype(np.int64)
    loop = smpl[ls:le].astype(np.int64)
    # The points around the loop end continue exactly as they do around the loop start, so playing
    # through the loop end is the same as playing on: no click, for any interpolation.
    before, after = ls - start, end - le
    assert np.array_equal(smpl[le - before:le], smpl[ls - before:ls])
    assert np.array_equal(smpl[le:end], smpl[ls:ls + after])
    assert abs(loop.mean()) < 1.0, "loop carries DC"
    assert np.abs(wave).max() <= 32767


def test_pitched_samples_are_tuned_to_exactly_440_hz_at_key_69(hydra):
    for rec in hydra["shdr"][:-1]:
        sname, _, _, ls, le, rate, root, corr, _, _ = rec
        sname = name(sname)
        if sname in ("pulse12", "pulse25", "pulse50", "triangle"):
            assert root == 69 and corr == 0
            assert (le - ls) % 96 == 0 and rate / 96 == 440.0, sname
        elif sname == "noise_short":
            assert root == 69 and (le - ls) % 93 == 0 and rate / 93 == 440.0
        elif sname == "noise_long":
            assert le - ls == 32767


def test_waveform_cycles_have_the_nominal_shape(hydra, smpl):
    by_name = {name(r[0]): r for r in hydra["shdr"]}

    def loop_of(sample):
        _, _, _, ls, le, *_ = by_name[sample]
        return smpl[ls:le].astype(np.int64)

    for sample, duty in (("pulse12", 0.125), ("pulse25", 0.25), ("pulse50", 0.5)):
        loop = loop_of(sample)
        assert len(np.unique(loop)) == 2
        assert np.mean(loop > 0) == duty, sample
    tri = loop_of("triangle")
    levels = np.unique(tri)
    assert len(levels) == 16 and len(set(np.diff(levels))) == 1  # 16 equally spaced levels
    steps = tri[:96].reshape(32, 3)
    assert (steps == steps[:, :1]).all()  # 32 steps of 3 samples each per cycle
    short = loop_of("noise_short")
    assert np.array_equal(short[93:], short[:-93])
    assert not np.array_equal(short[31:124], short[:93])  # period 93, not a divisor of it
    long_ = loop_of("noise_long")
    assert len(np.unique(long_)) == 2
    # long mode: a maximal-length 15-bit sequence (16384 of one value, 16383 of the other)
    assert sorted(np.unique(long_, return_counts=True)[1]) == [16383, 16384]


def test_lfsr_modes_have_the_nes_periods():
    for short, period in ((True, 93), (False, 32767)):
        bits = build.lfsr_bits(short, 3 * period)
        assert np.array_equal(bits[:period], bits[period:2 * period])
        for p in range(1, period):
            if period % p == 0:
                assert not np.array_equal(bits[:period], np.roll(bits[:period], p)), (short, p)


def test_every_instrument_has_a_volume_envelope_and_the_right_loop_mode(hydra):
    insts = zones(hydra, "i")
    assert list(insts) == PITCHED + DRUM_PIECES
    for iname, zs in insts.items():
        for z in zs:
            assert set(z) >= ENVELOPE_GENS, iname
            assert list(z)[-1] == 53, f"{iname}: sampleID must be the last generator"
            assert list(z)[0] == 43, f"{iname}: keyRange must be the first generator"
            if iname in PITCHED:
                assert z[54] == 1, f"{iname} must loop continuously"
            else:
                assert z.get(54, 0) == 0, f"{iname} must be one-shot"
                assert z[56] == 0, f"{iname}: drums do not follow the key"
    hat_class = {n: insts[n][0].get(57, 0) for n in ("closed_hat", "open_hat", "cymbal", "shaker")}
    assert hat_class["closed_hat"] == hat_class["open_hat"] != 0
    assert hat_class["cymbal"] == hat_class["shaker"] == 0


def test_raw_instruments_switch_the_filter_and_velocity_to_filter_modulator_off(hydra):
    insts = zones(hydra, "i")
    for iname in PITCHED + DRUM_PIECES:
        if iname != "keys":
            assert insts[iname][0][8] == 13500, iname
    mods = {m for m in hydra["imod"][:-1]}
    assert (0x0102, 8, 0, 0x0C02, 0) in mods and (0x0102, 8, 0, 0, 0) in mods


def test_drum_kit_covers_every_general_midi_drum_key(hydra):
    kit = zones(hydra, "p")["drumkit"]
    inst_names = [name(r[0]) for r in hydra["inst"]]
    covered = {}
    for z in kit:
        lo, hi = z[43] & 0xFF, z[43] >> 8
        assert list(z)[-1] == 41, "instrument must be the last preset generator"
        for key in range(lo, hi + 1):
            assert key not in covered, f"key {key} in two zones"
            covered[key] = inst_names[z[41]]
    assert set(range(35, 82)) <= set(covered)
    for piece, key in soundfonts.DRUM_KEYS.items():
        assert covered[key] in (piece, piece.split("_")[0])
    assert {covered[k] for k in (49, 51, 52, 55, 57, 59)} == {"cymbal"}
    assert {covered[k] for k in (37, 39, 40)} == {"snare"}
    assert {covered[k] for k in range(35, 82)} == set(DRUM_PIECES)
    assert covered == {k: v[0] for k, v in GM_DRUM_MAP.items()}


# --- sf2utils, an independent parser ---


def test_sf2utils_sees_every_preset_instrument_and_sample(caplog):
    with caplog.at_level(logging.WARNING), SF2.open("rb") as fh:
        sf = Sf2File(fh)
        presets = {p.name: (p.bank, p.preset) for p in sf.presets if p.name != "EOP"}
        instruments = [i.name for i in sf.instruments if i.name != "EOI"]
        samples = {s.name: s for s in sf.samples if s.name != "EOS"}
        assert sf.info.bank_name == "chiplofi 8-bit"
        assert sf.info.sound_engine == "EMU8000"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert presets == soundfonts.PRESETS
    assert instruments == PITCHED + DRUM_PIECES
    assert list(samples) == SAMPLES
    for sname, s in samples.items():
        assert s.original_pitch == (69 if sname in LOOPED_SAMPLES else 60), sname
        assert s.pitch_correction == 0 and s.is_mono
    assert samples["pulse50"].sample_rate == 42240 and samples["noise_short"].sample_rate == 40920
    assert samples["pulse12"].end_loop - samples["pulse12"].start_loop == 4 * 96


# --- building ---


def test_build_is_reproducible_and_equals_the_committed_file(tmp_path):
    first = soundfont_bytes()
    assert soundfont_bytes() == first
    out = build_soundfont(tmp_path / "chiplofi.sf2")
    assert out == tmp_path / "chiplofi.sf2"
    assert out.read_bytes() == first
    assert first == SF2.read_bytes(), "soundfonts/chiplofi.sf2 is stale: run python -m soundfonts.build"
    assert [p.name for p in tmp_path.iterdir()] == ["chiplofi.sf2"]  # no temporary file left


def test_build_replaces_an_existing_file(tmp_path):
    out = tmp_path / "x.sf2"
    out.write_bytes(b"old")
    build_soundfont(out)
    assert out.read_bytes()[:4] == b"RIFF"


@pytest.mark.parametrize("case", ["missing_dir", "parent_is_file", "read_only_fs"])
def test_unwritable_output_raises_soundfont_error_naming_the_path(tmp_path, case):
    if case == "missing_dir":
        out = tmp_path / "nowhere" / "chiplofi.sf2"
    elif case == "parent_is_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "chiplofi.sf2"
    else:
        out = Path("/proc/chiplofi.sf2")  # refused even to root, unlike a chmod-ed directory
    with pytest.raises(SoundFontError) as err:
        build_soundfont(out)
    assert str(out) in str(err.value)
    assert not out.exists()


def test_module_command_line_writes_the_file_and_reports_errors(tmp_path):
    out = tmp_path / "cli.sf2"
    ok = subprocess.run([sys.executable, "-m", "soundfonts.build", "-o", str(out)],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert out.read_bytes() == SF2.read_bytes()
    bad = tmp_path / "missing" / "cli.sf2"
    fail = subprocess.run([sys.executable, "-m", "soundfonts.build", "-o", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert fail.returncode == 1
    assert str(bad) in fail.stderr and "Traceback" not in fail.stderr
