"""Property tests of the parameter-file reader/writer: write → read round trips and fuzzing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from midas_ref.errors import ParameterFileError
from midas_ref.detector import Geometry
from midas_ref.params import (KEY_TABLE, Entry, ParameterFile, geometry_from_params, key_spec,
                              params_from_geometry, parse_parameter_text, read_parameter_file,
                              write_parameter_file)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys drawn at random; NrPixels is left out because it also sets NrPixelsY/Z (tested in test_params.py).
RANDOM_KEYS = [spec for spec in KEY_TABLE if spec.name != "NrPixels"]

# Characters allowed inside a string value: anything but the comment sign, line breaks and NUL.
value_chars = st.characters(blacklist_characters="#\n\r\x00", blacklist_categories=("Cs",))
string_values = st.text(value_chars, min_size=1, max_size=20).map(lambda s: s.strip(" \t")).filter(bool)
unknown_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).filter(lambda k: key_spec(k) is None)
# Any finite float, including subnormals, -0.0 and the extremes: repr must bring each back bit for bit.
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
bounded_ints = st.integers(-(10**15), 10**15)


def values_for(spec):
    """Strategy drawing a value valid for ``spec``, as Python objects (scalar, tuple or list)."""
    one = {int: bounded_ints, float: finite_floats, str: string_values}[spec.type]
    if spec.fallback:  # 0 means "use the fallback key", so the stored value would not come back
        one = one.filter(bool)
    if spec.repeatable:
        return st.lists(one, max_size=4)
    if spec.count is None:
        return st.lists(one, max_size=5).map(tuple)
    if spec.count == 1:
        return one
    return st.lists(one, min_size=spec.count, max_size=spec.count).map(tuple)


VALID_VALUES = {spec.name: values_for(spec) for spec in RANDOM_KEYS}


@st.composite
def valid_parameter_sets(draw):
    """(ParameterFile, expected typed values, unknown keys in order) built from random known and unknown keys."""
    specs = draw(st.lists(st.sampled_from(RANDOM_KEYS), max_size=15, unique_by=lambda s: s.name))
    pf, expected, unknown = ParameterFile(), {}, []
    for spec in specs:
        value = draw(VALID_VALUES[spec.name])
        key = draw(st.sampled_from((spec.name, *spec.aliases)))
        pf = pf.set(key, value)
        if spec.repeatable:
            expected[spec.name] = [spec.type(v) for v in value]
        elif isinstance(value, tuple):
            expected[spec.name] = tuple(spec.type(v) for v in value)
        else:
            expected[spec.name] = spec.type(value)
        name = draw(st.none() | unknown_keys)
        if name is not None and name not in unknown:
            pf = pf.set(name, draw(string_values))
            unknown.append(name)
    return pf, expected, unknown


def same(a, b) -> bool:
    """Exact equality, telling -0.0 from 0.0."""
    return type(a) is type(b) and repr(a) == repr(b)


@SETTINGS
@given(valid_parameter_sets())
def test_write_read_round_trip_keeps_typed_values_exactly(case):
    pf, expected, unknown = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.txt"
        write_parameter_file(pf, path)
        again = read_parameter_file(path)
    for key, value in expected.items():
        assert same(pf.get(key), value), key
        assert same(again.get(key), value), key
    assert [k for k in again.keys() if key_spec(k) is None] == unknown
    assert [(e.key, e.value) for e in again.entries if e.key] == [(e.key, e.value) for e in pf.entries if e.key]


@st.composite
def realistic_geometries(draw):
    """Geometries of real calibrations: 0.1–10 m, beam centre near the detector, small tilts and distortion."""
    n_y, n_z = draw(st.integers(64, 4096)), draw(st.integers(64, 4096))
    small = st.floats(-1e-2, 1e-2)
    return Geometry(lsd_um=draw(st.floats(1e5, 1e7)), bc_y_px=draw(st.floats(-n_y, 2 * n_y)),
                    bc_z_px=draw(st.floats(-n_z, 2 * n_z)), px_um=draw(st.floats(10, 1000)), n_pixels_y=n_y,
                    n_pixels_z=n_z, tx_deg=draw(st.floats(-5, 5)), ty_deg=draw(st.floats(-5, 5)),
                    tz_deg=draw(st.floats(-5, 5)), p0=draw(small), p1=draw(small), p2=draw(small),
                    p3_deg=draw(st.floats(-180, 180)), p4=draw(small), p5=draw(small),
                    rho_d_um=draw(st.none() | st.floats(1e3, 1e6)))


@SETTINGS
@given(realistic_geometries())
def test_geometry_params_geometry_round_trip_is_exact(geometry):
    text = params_from_geometry(geometry).to_text()
    assert geometry_from_params(parse_parameter_text(text)) == geometry


# ---- fuzzing: only ParameterFile or ParameterFileError may come out

def parses_or_rejects(text: str) -> ParameterFile | None:
    try:
        return parse_parameter_text(text)
    except ParameterFileError:
        return None


tokens = st.one_of(st.sampled_from(["1", "-2.5", "2E-3", ".5", "5.", "nan", "inf", "1e999", "0x10", "1_000", "#",
                                    "", "\t", "3.0", "abc", "９", "\x0b"]),
                   st.text(max_size=6), finite_floats.map(repr), bounded_ints.map(str))
key_names = st.one_of(st.sampled_from([n for s in KEY_TABLE for n in (s.name, *s.aliases)]), st.text(max_size=8))
lines = st.builds(lambda k, v, sep: k + sep + " ".join(v), key_names, st.lists(tokens, max_size=7),
                  st.sampled_from([" ", "\t", "  ", ""]))
parameter_like_texts = st.lists(lines, max_size=12).map("\n".join)


@SETTINGS
@given(st.one_of(st.text(), parameter_like_texts))
@example("\r")
@example("Lsd 1e999")
@example("BC 1")
@example("#")
@example("Lsd\t1000 # c\n\n")
@example("NrPixels 10\nNrPixelsY ９")
def test_any_text_parses_or_raises_parameter_file_error(text):
    pf = parses_or_rejects(text)
    if pf is None:
        return
    again = parse_parameter_text(pf.to_text())  # what we write, we read back identically
    assert again.entries == pf.entries
    target(float(len(pf.keys())), label="keys parsed")
    for key in pf.keys():
        try:
            pf.get(key)
        except ParameterFileError as error:  # only absent fallback-free keys may be "missing"
            assert "missing required key" in str(error)


@SETTINGS
@given(st.binary(max_size=200) | parameter_like_texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(b"\xff\xfeL\x00s\x00d\x00")
@example(b"\xef\xbb\xbfLsd 1\n")
def test_any_file_content_reads_or_raises_parameter_file_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.txt"
        path.write_bytes(data)
        try:
            read_parameter_file(path)
        except ParameterFileError as error:
            assert str(path) in str(error)


@SETTINGS
@given(st.sampled_from([s.name for s in KEY_TABLE]) | unknown_keys,
       st.one_of(st.none(), finite_floats, st.floats(), bounded_ints, st.text(max_size=10),
                 st.lists(st.one_of(finite_floats, bounded_ints), max_size=7)))
def test_set_accepts_or_raises_parameter_file_error(key, value):
    try:
        pf = ParameterFile().set(key, value)
    except ParameterFileError:
        return
    numbered = tuple(Entry(e.key, e.value, e.comment, line) for line, e in enumerate(pf.entries, 1))
    assert parse_parameter_text(pf.to_text()).entries == numbered
