"""Kubernetes label selectors (``matchLabels`` + ``matchExpressions``): parsing and matching.

The Eip's ``spec.nodeSelector`` (a porterlb extension, OpenELB issue #310) is a standard
``metav1.LabelSelector``. The CRD schema checks its shape and the operator/values pairing;
:func:`parse` checks everything again, including label key and value syntax (as
``metav1.LabelSelectorAsSelector`` does), because an object stored before the rules existed,
or through another served version, never met them. Each ``matchLabels`` entry becomes an
``In`` requirement with one value, so matching has one code path. An empty selector matches
every node, as in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from porterlb import errors

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS: tuple[Operator, ...] = get_args(Operator)

NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
"""A label name or value, as apimachinery's ``IsQualifiedName`` and ``IsValidLabelValue``."""
NAME_MAX = 63
PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
"""A key's prefix: a DNS-1123 subdomain (``IsDNS1123Subdomain``), at most 253 characters."""
PREFIX_MAX = 253

KEY_HINT = (
    "an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.',"
    " beginning and ending with a letter or digit"
)
VALUE_HINT = (
    "empty, or at most 63 letters, digits, '-', '_' or '.', beginning and ending with a"
    " letter or digit"
)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on one label."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        return not present


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """Every requirement must hold; no requirement matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)


def parse(obj: Any, *, field: str) -> LabelSelector:
    """Build a :class:`LabelSelector` from its API form; `field` names it in messages.

    Raises InvalidSpec naming the field, the entry and the value that is wrong.
    """
    if not isinstance(obj, Mapping):
        raise errors.InvalidSpec(
            f"{field}: {obj!r} is not a selector (matchLabels and/or matchExpressions)"
        )
    requirements: list[Requirement] = []
    labels = obj.get("matchLabels")
    labels = {} if labels is None else labels
    if not isinstance(labels, Mapping):
        raise errors.InvalidSpec(f"{field}.matchLabels: {labels!r} is not a map of labels")
    for key, value in labels.items():
        requirements.append(
            Requirement(
                _key(key, f"{field}.matchLabels"),
                "In",
                frozenset({_value(value, f"{field}.matchLabels[{key!r}]")}),
            )
        )
    expressions = obj.get("matchExpressions")
    expressions = [] if expressions is None else expressions
    if not isinstance(expressions, list):
        raise errors.InvalidSpec(f"{field}.matchExpressions: {expressions!r} is not a list")
    for index, expression in enumerate(expressions):
        requirements.append(_requirement(expression, f"{field}.matchExpressions[{index}]"))
    return LabelSelector(tuple(requirements))


def _requirement(obj: Any, where: str) -> Requirement:
    if not isinstance(obj, Mapping):
        raise errors.InvalidSpec(f"{where}: {obj!r} is not an expression (key, operator, values)")
    key, operator, values = _key(obj.get("key"), where), obj.get("operator"), obj.get("values")
    if operator not in OPERATORS:
        raise errors.InvalidSpec(
            f"{where}: operator {operator!r} is not one of {', '.join(OPERATORS)}"
        )
    values = [] if values is None else values
    if not isinstance(values, list):
        raise errors.InvalidSpec(f"{where}.values: {values!r} is not a list")
    if operator in ("In", "NotIn") and not values:
        raise errors.InvalidSpec(f"{where}.values: operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise errors.InvalidSpec(f"{where}.values: operator {operator} takes no values")
    return Requirement(key, operator, frozenset(_value(v, f"{where}.values") for v in values))


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not _valid_key(key):
        raise errors.InvalidSpec(f"{where}: label key {key!r} is not valid ({KEY_HINT})")
    return key


def _valid_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= PREFIX_MAX and PREFIX.fullmatch(prefix)):
        return False
    return 0 < len(name) <= NAME_MAX and NAME.fullmatch(name) is not None


def _value(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > NAME_MAX or not NAME.fullmatch(value):
        raise errors.InvalidSpec(f"{where}: label value {value!r} is not valid ({VALUE_HINT})")
    return value
