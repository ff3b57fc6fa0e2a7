"""Reading objects that may not fit the models: a termination summary a pod wrote, or a status an older
operator version stored. What fits is kept; each field that does not is dropped (and named), instead of
the whole object being refused."""

from __future__ import annotations

from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_snake

M = TypeVar("M", bound=BaseModel)

_MAX_ROUNDS = 32


def validate_dropping(model: type[M], data: dict[str, Any]) -> tuple[M, list[str]]:
    """``model`` from ``data`` with every field that fails validation removed; also the removed paths.

    A missing required field drops the object that needed it. After too many rounds (a hostile object
    with many bad fields), the model's empty form.
    """
    data = copy_json(data)
    dropped: list[str] = []
    for _ in range(_MAX_ROUNDS):
        try:
            return model.model_validate(data), dropped
        except ValidationError as exc:
            paths = {_bad_path(err["loc"], err["type"]) for err in exc.errors()}
            removed = [p for p in sorted(paths, key=len, reverse=True) if p and _remove(data, p)]
            if not removed:
                break
            dropped += [".".join(str(part) for part in p) for p in removed]
    return model.model_validate({}), [*dropped, "(everything)"]


def _bad_path(loc: tuple[int | str, ...], kind: str) -> tuple[int | str, ...]:
    """The part of the data to drop: the field (a bad dict key: its entry), or the object that misses a
    required field."""
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    return loc[:-1] if kind == "missing" else loc


def _remove(data: Any, path: tuple[int | str, ...]) -> bool:
    *parents, last = path
    for part in parents:
        if isinstance(data, dict) and _key(data, part) is not None:
            data = data[_key(data, part)]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    if isinstance(data, dict) and (key := _key(data, last)) is not None:
        del data[key]
        return True
    if isinstance(data, list) and isinstance(last, int) and 0 <= last < len(data):
        del data[last]
        return True
    return False


def _key(data: dict[str, Any], part: int | str) -> str | None:
    """The key of ``data`` an error location names: as written, or its snake_case spelling (errors name
    fields by their camelCase alias, and the data may use either)."""
    if not isinstance(part, str):
        return None
    if part in data:
        return part
    snake = to_snake(part)
    return snake if snake in data else None


def copy_json(value: Any) -> Any:
    """A copy of decoded JSON (dicts, lists and immutable scalars) that shares no dict or list with it:
    what ``copy.deepcopy`` gives for such data, in a third of the time (no memo, no type dispatch)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def unknown_fields(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """Keys of ``data`` that ``model`` has no field for (by name or alias), nested models included: what a
    closed model would drop without an error, so that a writer can say so."""
    if not isinstance(data, dict):
        return []
    fields = {name: f for name, f in model.model_fields.items()}
    by_key = {**fields, **{f.alias: f for f in fields.values() if f.alias}}
    out = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        found = by_key.get(key)
        if found is None:
            out.append(path)
            continue
        nested = next(
            (
                t
                for t in (found.annotation, *get_args(found.annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
        if nested is not None:
            out += unknown_fields(nested, value, path)
    return out
