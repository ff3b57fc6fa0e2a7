"""The base of every spec model, and the patterns of Kubernetes names a spec refers to.

Kept apart from ``spec`` so that sub-models (``affinity``) can share it without an import cycle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

# Kubernetes name syntax (k8s.io/apimachinery/pkg/util/validation), in RE2 for the CRD and CEL.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = rf"^{_LABEL}([.]{_LABEL})*$"
"""Secret, ConfigMap, PersistentVolumeClaim and PriorityClass names."""
_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME = rf"^({_LABEL}([.]{_LABEL})*/)?{_NAME_PART}$"
"""Label keys (nodeSelector, toleration and topology keys): an optional DNS prefix, then a name."""
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
EXTENDED_RESOURCE = rf"^{_LABEL}([.]{_LABEL})*/{_NAME_PART}$"
"""An extended resource such as nvidia.com/gpu: a domain prefix is required."""
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
"""ConfigMap and Secret keys; ``.`` and names starting with ``..`` are refused by CONFIG_KEY_RULE."""
CONFIG_KEY_RULE = "self.key != '.' && !self.key.startsWith('..')"


_RULES_CHECKED: ContextVar[bool] = ContextVar("finetune_api_rules_checked", default=False)


@contextmanager
def rules_already_checked() -> Iterator[None]:
    """Build models from parts of a spec whose CEL rules were evaluated when it was validated, without
    evaluating them again. The rules hold for what is derived from that spec (in the pure-Python CEL
    used before, re-evaluating them took 3/4 of the time to build a run's Job).
    Structural validation (types, bounds, patterns) still runs."""
    token = _RULES_CHECKED.set(True)
    try:
        yield
    finally:
        _RULES_CHECKED.reset(token)


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL rule for ``x-kubernetes-validations`` (fieldPath makes the error name the field).

    Evaluated here by common-expression-language, where ``size()`` of a string counts bytes and the
    API server counts characters: bound a string's length with ``matches`` (``^.{0,63}$``) or the
    schema's ``maxLength``, not ``size()``."""
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class Model(BaseModel):
    """Base for every spec object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @model_validator(mode="after")
    def _cel_rules(self) -> Model:
        """Evaluate the CRD's own CEL rules, so `ftj validate` refuses what the API server refuses."""
        rules = _rules_of(type(self).model_config.get("json_schema_extra"))
        if rules and not _RULES_CHECKED.get():
            activation = _activation(self.wire())
            for rule, message, field_path in rules:
                if not _cel_program(rule)(activation):
                    where = field_path.lstrip(".")
                    raise ValueError(f"{where}: {message}" if where else message)
        return self


def _rules_of(extra: object) -> list[tuple[str, str, str]]:
    """The (rule, message, fieldPath) of each ``cel`` rule in a model's ``json_schema_extra``."""
    rules = extra.get("x-kubernetes-validations") if isinstance(extra, dict) else None
    if not isinstance(rules, list):
        return []
    return [
        (str(r["rule"]), str(r["message"]), str(r.get("fieldPath", ""))) for r in rules if isinstance(r, dict)
    ]


_log = logging.getLogger("finetune_api.cel")
_COMPILED: dict[str, Any] = {}
_COMPILING = threading.Lock()


def _cel_program(rule: str) -> Any:
    """The compiled check of ``rule``, compiled once per process (under a lock: the operator's 32
    reconcile threads meet their first FineTuneJobs at once)."""
    check = _COMPILED.get(rule)
    if check is not None:
        return check
    with _COMPILING:
        if rule not in _COMPILED:
            _COMPILED[rule] = _compile(rule)
        return _COMPILED[rule]


def _activation(value: dict[str, Any]) -> Any:
    """``self`` for a model's rules, converted to CEL values once: executed with a plain dict, each
    rule converted the whole object again (a FineTuneJob's spec once per root rule, six times; most of
    the operator's CPU to parse a new spec)."""
    import cel  # imported on first use

    try:
        return cel.Context(variables={"self": value})
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # a value CEL cannot take: each rule gets the dict, and fails, as before
        return {"self": value}


def _compile(rule: str) -> Any:
    """CEL as the API server evaluates it, in compiled code (the ``cel`` module of
    common-expression-language, a binding of the Rust implementation): the pure-Python cel-python
    took 5.4 ms per FineTuneJob, a fifth of the operator's CPU per new object. An evaluation error
    fails the rule, as it fails validation in the API server."""
    import cel  # imported on first use

    program = cel.compile(rule)

    def check(activation: Any) -> bool:
        try:
            return program.execute(activation) is True
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a rule that cannot be evaluated does not hold (a Rust panic too)
            _log.debug("CEL rule %r could not be evaluated: %s: %s", rule, type(exc).__name__, exc)
            return False

    return check
