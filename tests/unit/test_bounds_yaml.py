"""The pipeline loader is bounded: aliases, deep nesting and huge files are refused, located."""

from __future__ import annotations

import resource

import pytest

from fogline.yamldoc import MAX_BYTES, YamlDocumentError, load
from gateway.spec import PipelineError, parse_pipeline

# The attack from issue 9: 502 bytes whose nested aliases expand to 9**9 nodes (4 GB).
BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_an_alias_bomb_is_refused_at_its_first_alias_without_expanding() -> None:
    assert len(BOMB) < 600
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert problems(BOMB) == [
        "p.yaml:2:8 invalid YAML: aliases are not allowed (*a); write the value out"
    ]
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000


def test_a_single_alias_in_a_pipeline_is_refused_with_its_line() -> None:
    text = "name: t\nkey: &k [machine]\nother: *k\n"
    assert problems(text) == [
        "p.yaml:3:8 invalid YAML: aliases are not allowed (*k); write the value out"
    ]


def test_an_anchor_alone_is_harmless_and_accepted() -> None:
    assert load("a: &x 1\nb: 2\n").data == {"a": 1, "b": 2}


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(YamlDocumentError) as info:
        load("x: " + "[" * 50_000 + "]" * 50_000, "deep.yaml")
    assert str(info.value) == "deep.yaml:1:67 invalid YAML: nested deeper than 64 levels"


def test_an_oversized_document_is_refused_before_parsing() -> None:
    text = "# " + "x" * MAX_BYTES + "\n"
    with pytest.raises(YamlDocumentError) as info:
        load(text, "big.yaml")
    assert (
        str(info.value)
        == f"big.yaml:1:1 expected at most {MAX_BYTES} bytes of YAML, got {MAX_BYTES + 3}"
    )


def test_an_expression_out_of_bounds_is_reported_by_pipeline_check() -> None:
    text = """\
name: t
key: [machine]
sources:
  - mqtt:
      topics: ["plant/{machine}/telemetry"]
steps:
  - filter: {when: "10**10**10 > temperature"}
outputs:
  - uplink: {from: filter, kind: event}
"""
    expected = (
        "p.yaml:7:14 steps[0].filter.when: expected a valid expression, got "
        "'10**10**10 > temperature': operator '**': 10 ** 10000000000 would have more "
        "than 4096 bits (column 3)"
    )
    assert problems(text) == [expected]


def test_a_control_character_is_a_located_problem_not_a_reader_error() -> None:
    """Found by tests/unit/test_fuzz.py: PyYAML's ReaderError escaped the loader."""
    with pytest.raises(YamlDocumentError) as info:
        load("name: t\nkey: \x1f\n", "c.yaml")
    assert str(info.value) == "c.yaml:2:6 invalid YAML: character '\\x1f' is not allowed"


@pytest.mark.parametrize(
    ("text", "where"),
    [("{}: x", "f.yaml:1:1 "), ("[a]: 1", "f.yaml:1:1 "), ("a: {[1]: 2}", "f.yaml:1:5 a: ")],
)
def test_a_mapping_or_list_as_a_key_is_a_located_problem(text: str, where: str) -> None:
    """Found by the fuzz test: `{}: x` was a TypeError (a dict is no dict key)."""
    with pytest.raises(YamlDocumentError) as caught:
        load(text, "f.yaml")
    [problem] = caught.value.problems
    assert str(problem).startswith(where)
    assert "a key must be a name or a number" in str(problem)
