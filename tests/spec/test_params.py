from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec.params import BackendParameter, ParameterError, parse_backend_parameters


def test_three_forms():
    parsed = parse_backend_parameters(
        ["--ctx-size=4096", "--alias 'my model'", ["--seed", "-1"], "--no-mmap", "--threads", "4"]
    )
    assert parsed == (
        BackendParameter("--ctx-size", "4096"),
        BackendParameter("--alias", "my model"),
        BackendParameter("--seed", "-1"),
        BackendParameter("--no-mmap"),
        BackendParameter("--threads", "4"),
    )


def test_equals_value_may_be_empty_or_contain_equals():
    assert parse_backend_parameters(["--a=", "--b=x=y"]) == (
        BackendParameter("--a", ""),
        BackendParameter("--b", "x=y"),
    )


@pytest.mark.parametrize(
    ("items", "index", "words"),
    [
        (["--ok", "'unclosed"], 1, "cannot split"),
        (["value"], 0, "no flag before it"),
        (["--a", "b", "c"], 2, "no flag before it"),
        ([""], 0, "empty"),
        (["--bad$flag"], 0, "not a valid flag"),
    ],
)
def test_errors_name_the_item(items, index, words):
    with pytest.raises(ParameterError) as raised:
        parse_backend_parameters(items)
    assert raised.value.index == index and words in str(raised.value)


flags = st.from_regex(r"--[a-z][a-z0-9-]{0,12}", fullmatch=True)
values = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda v: not v.startswith("-")
)


@given(st.lists(st.tuples(flags, st.none() | values), max_size=8))
def test_argv_round_trip(pairs):
    params = tuple(BackendParameter(f, v) for f, v in pairs)
    argv = [token for p in params for token in p.argv()]
    assert parse_backend_parameters([argv] if argv else []) == params
    assert (
        parse_backend_parameters([p.flag if p.value is None else f"{p.flag}={shlex.quote(p.value)}" for p in params])
        == params
    )
