"""Fuzz the .k front end: mutated and truncated files raise KcompError or build, nothing else."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcomp import dsl
from kcomp.errors import KcompError

EXAMPLES = [p.read_text() for p in sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.k"))]

# Inserted text avoids ASCII digits when the model is built, so a mutation cannot
# turn dense(64) into dense(64999999999) and ask for terabytes of weights.
NO_DIGITS = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="0123456789"), max_size=8)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)


@st.composite
def mutated(draw, insert=NO_DIGITS):
    text = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "delete", "truncate", "insert"]))
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "flip" and text:
            char = draw(st.characters(blacklist_categories=("Cs",), blacklist_characters="0123456789"))
            text = text[:at] + char + text[at + 1 :]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif kind == "truncate":
            text = text[:at]
        else:
            text = text[:at] + draw(insert) + text[at:]
    return text


def _only_kcomp_errors(fn, text):
    try:
        fn(text, "fuzz.k")
    except KcompError:
        pass  # a clear error is the expected outcome for most mutations


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(insert=ANY_TEXT))
def test_parser_raises_only_kcomp_errors(text):
    _only_kcomp_errors(dsl.parse, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_building_raises_only_kcomp_errors(text):
    _only_kcomp_errors(dsl.loads, text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data):
    _only_kcomp_errors(dsl.parse, data.decode("utf-8", errors="replace"))
