from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.api import selector

F = "spec.nodeSelector"
KEY_HINT = selector.KEY_HINT
VALUE_HINT = selector.VALUE_HINT


def expr(key, operator, *values):
    found = {"key": key, "operator": operator}
    if values:
        found["values"] = list(values)
    return {"matchExpressions": [found]}


@pytest.mark.parametrize(
    ("spec", "labels", "want"),
    [
        pytest.param({}, {}, True, id="empty-matches-all"),
        pytest.param(
            {"matchLabels": {}, "matchExpressions": []}, {"a": "1"}, True, id="empty-lists"
        ),
        pytest.param(
            {"matchLabels": {"rack": "a"}}, {"rack": "a", "x": "y"}, True, id="labels-hit"
        ),
        pytest.param({"matchLabels": {"rack": "a"}}, {"rack": "b"}, False, id="labels-other-value"),
        pytest.param({"matchLabels": {"rack": "a"}}, {}, False, id="labels-absent"),
        pytest.param({"matchLabels": {"rack": ""}}, {"rack": ""}, True, id="labels-empty-value"),
        pytest.param(expr("rack", "In", "a", "b"), {"rack": "b"}, True, id="in-hit"),
        pytest.param(expr("rack", "In", "a", "b"), {"rack": "c"}, False, id="in-miss"),
        pytest.param(expr("rack", "In", "a"), {}, False, id="in-absent"),
        pytest.param(expr("rack", "NotIn", "a"), {"rack": "b"}, True, id="notin-other"),
        pytest.param(expr("rack", "NotIn", "a"), {"rack": "a"}, False, id="notin-hit"),
        pytest.param(expr("rack", "NotIn", "a"), {}, True, id="notin-absent"),
        pytest.param(expr("gpu", "Exists"), {"gpu": ""}, True, id="exists-hit"),
        pytest.param(expr("gpu", "Exists"), {}, False, id="exists-absent"),
        pytest.param(expr("gpu", "DoesNotExist"), {}, True, id="doesnotexist-absent"),
        pytest.param(expr("gpu", "DoesNotExist"), {"gpu": "x"}, False, id="doesnotexist-hit"),
        pytest.param(
            {**expr("gpu", "DoesNotExist"), "matchLabels": {"rack": "a"}},
            {"rack": "a"},
            True,
            id="both-hold",
        ),
        pytest.param(
            {**expr("gpu", "DoesNotExist"), "matchLabels": {"rack": "a"}},
            {"rack": "a", "gpu": "1"},
            False,
            id="one-fails",
        ),
        pytest.param(
            {"matchLabels": {"topology.kubernetes.io/zone": "z1"}},
            {"topology.kubernetes.io/zone": "z1"},
            True,
            id="prefixed-key",
        ),
    ],
)
def test_matches(spec, labels, want):
    assert selector.parse(spec, field=F).matches(labels) is want


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            "rack=a",
            f"{F}: 'rack=a' is not a selector (matchLabels and/or matchExpressions)",
            id="not-an-object",
        ),
        pytest.param(
            {"matchLabels": ["rack"]},
            f"{F}.matchLabels: ['rack'] is not a map of labels",
            id="labels-not-a-map",
        ),
        pytest.param(
            {"matchLabels": {"bad key": "a"}},
            f"{F}.matchLabels: label key 'bad key' is not valid ({KEY_HINT})",
            id="labels-bad-key",
        ),
        pytest.param(
            {"matchLabels": {"Bad.Prefix/rack": "a"}},
            f"{F}.matchLabels: label key 'Bad.Prefix/rack' is not valid ({KEY_HINT})",
            id="labels-upper-prefix",
        ),
        pytest.param(
            {"matchLabels": {"/rack": "a"}},
            f"{F}.matchLabels: label key '/rack' is not valid ({KEY_HINT})",
            id="labels-empty-prefix",
        ),
        pytest.param(
            {"matchLabels": {"x" * 64: "a"}},
            f"{F}.matchLabels: label key '{'x' * 64}' is not valid ({KEY_HINT})",
            id="labels-long-key",
        ),
        pytest.param(
            {"matchLabels": {"rack": "-a"}},
            f"{F}.matchLabels['rack']: label value '-a' is not valid ({VALUE_HINT})",
            id="labels-bad-value",
        ),
        pytest.param(
            {"matchLabels": {"rack": 7}},
            f"{F}.matchLabels['rack']: label value 7 is not valid ({VALUE_HINT})",
            id="labels-number-value",
        ),
        pytest.param(
            {"matchExpressions": {"key": "rack"}},
            f"{F}.matchExpressions: {{'key': 'rack'}} is not a list",
            id="expressions-not-a-list",
        ),
        pytest.param(
            {"matchExpressions": ["rack"]},
            f"{F}.matchExpressions[0]: 'rack' is not an expression (key, operator, values)",
            id="expression-not-an-object",
        ),
        pytest.param(
            {"matchExpressions": [{"operator": "Exists"}]},
            f"{F}.matchExpressions[0]: label key None is not valid ({KEY_HINT})",
            id="expression-no-key",
        ),
        pytest.param(
            expr("rack", "Gt", "1"),
            f"{F}.matchExpressions[0]: operator 'Gt' is not one of In, NotIn, Exists, DoesNotExist",
            id="operator-unknown",
        ),
        pytest.param(
            expr("rack", "in", "a"),
            f"{F}.matchExpressions[0]: operator 'in' is not one of In, NotIn, Exists, DoesNotExist",
            id="operator-lower-case",
        ),
        pytest.param(
            expr("rack", "In"),
            f"{F}.matchExpressions[0].values: operator In needs at least one value",
            id="in-without-values",
        ),
        pytest.param(
            expr("rack", "NotIn"),
            f"{F}.matchExpressions[0].values: operator NotIn needs at least one value",
            id="notin-without-values",
        ),
        pytest.param(
            expr("gpu", "Exists", "1"),
            f"{F}.matchExpressions[0].values: operator Exists takes no values",
            id="exists-with-values",
        ),
        pytest.param(
            expr("gpu", "DoesNotExist", "1"),
            f"{F}.matchExpressions[0].values: operator DoesNotExist takes no values",
            id="doesnotexist-with-values",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "rack", "operator": "In", "values": "a"}]},
            f"{F}.matchExpressions[0].values: 'a' is not a list",
            id="values-not-a-list",
        ),
        pytest.param(
            expr("rack", "In", "a b"),
            f"{F}.matchExpressions[0].values: label value 'a b' is not valid ({VALUE_HINT})",
            id="values-bad-value",
        ),
        pytest.param(
            {"matchExpressions": [expr("rack", "Exists")["matchExpressions"][0], "x"]},
            f"{F}.matchExpressions[1]: 'x' is not an expression (key, operator, values)",
            id="second-expression-named",
        ),
    ],
)
def test_malformed_selector_names_the_field_and_value(spec, message):
    with pytest.raises(errors.InvalidSpec) as raised:
        selector.parse(spec, field=F)
    assert str(raised.value) == message


def test_match_labels_become_in_requirements():
    parsed = selector.parse({"matchLabels": {"rack": "a"}}, field=F)
    assert parsed == selector.LabelSelector((selector.Requirement("rack", "In", frozenset({"a"})),))


KEYS = st.sampled_from(["rack", "zone", "gpu"])
VALUES = st.sampled_from(["a", "b", "c"])
LABELS = st.dictionaries(KEYS, VALUES)


@given(
    st.dictionaries(KEYS, VALUES),
    st.lists(
        st.one_of(
            st.builds(
                lambda k, op, vs: {"key": k, "operator": op, "values": vs},
                KEYS,
                st.sampled_from(["In", "NotIn"]),
                st.lists(VALUES, min_size=1),
            ),
            st.builds(
                lambda k, op: {"key": k, "operator": op},
                KEYS,
                st.sampled_from(["Exists", "DoesNotExist"]),
            ),
        )
    ),
    LABELS,
)
def test_a_selector_matches_when_every_part_does(match_labels, expressions, labels):
    """Matching is the conjunction of the parts, each read as Kubernetes defines it."""
    whole = selector.parse(
        {"matchLabels": match_labels, "matchExpressions": expressions}, field=F
    ).matches(labels)
    parts = [selector.parse({"matchLabels": {k: v}}, field=F) for k, v in match_labels.items()]
    parts += [selector.parse({"matchExpressions": [e]}, field=F) for e in expressions]
    assert whole == all(part.matches(labels) for part in parts)


@given(KEYS, st.lists(VALUES, min_size=1), LABELS)
def test_notin_is_the_negation_of_in(key, values, labels):
    inside = selector.parse(expr(key, "In", *values), field=F).matches(labels)
    assert selector.parse(expr(key, "NotIn", *values), field=F).matches(labels) is not inside


@given(KEYS, LABELS)
def test_doesnotexist_is_the_negation_of_exists(key, labels):
    exists = selector.parse(expr(key, "Exists"), field=F).matches(labels)
    assert selector.parse(expr(key, "DoesNotExist"), field=F).matches(labels) is not exists


@given(st.from_type(object) | st.dictionaries(st.text(), st.from_type(object)))
def test_parse_raises_only_invalid_spec(obj):
    with contextlib.suppress(errors.InvalidSpec):
        selector.parse(obj, field=F)
