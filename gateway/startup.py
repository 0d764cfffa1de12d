"""Reading the settings at start-up: a bad one is one line naming its environment variable and
what it must be, and exit status 2, never a traceback.

Every way of starting the gateway reads its settings through `settings_or_exit` (`serve`,
`simulator` and `export-schema` of `python -m gateway`, and `create_app()` called with no
settings, as `uvicorn --factory gateway.app:create_app` does), so each says the same thing.
The value given is never printed: it may be a secret.
"""

from __future__ import annotations

import multiprocessing
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn, TypeVar

import annotated_types
from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

__all__ = [
    "BAD_SETTING_STATUS",
    "bad_setting_lines",
    "environment_variable",
    "refuse",
    "requirement",
    "settings_or_exit",
]

#: Exit status of a process whose settings are refused: a usage error, as argparse's.
BAD_SETTING_STATUS: Final = 2
#: Exit status of a `uvicorn --workers` worker whose settings are refused: uvicorn's
#: STARTUP_FAILURE, on which its supervisor stops instead of starting the worker again (and
#: again: the same settings fail the same way every time).
_UVICORN_STARTUP_FAILURE: Final = 3

S = TypeVar("S", bound=BaseSettings)


def settings_or_exit(load: Callable[[], S], *, program: str = "mps-gateway") -> S:
    """`load()` (a settings class, read from the environment); when it refuses a setting,
    print one line per refused variable on stderr and exit with status 2."""
    try:
        return load()
    except ValidationError as refused:
        settings_class = load if isinstance(load, type) else None
        refuse(bad_setting_lines(refused, settings_class), program=program)


def refuse(lines: list[str], *, program: str = "mps-gateway") -> NoReturn:
    """Print `lines` (what is wrong with the configuration) on stderr, each after `program: `,
    and exit with status 2 (uvicorn's STARTUP_FAILURE in a `uvicorn --workers` worker)."""
    for line in lines:
        print(f"{program}: {line}", file=sys.stderr, flush=True)
    # A worker of `uvicorn --workers N` runs in a child of uvicorn's supervisor.
    worker = multiprocessing.parent_process() is not None
    raise SystemExit(_UVICORN_STARTUP_FAILURE if worker else BAD_SETTING_STATUS)


def bad_setting_lines(
    refused: ValidationError, settings_class: type[BaseSettings] | None
) -> list[str]:
    """One line per error of `refused`: the variable, what it must be, and what was wrong
    (never the value received)."""
    lines = []
    for error in refused.errors(include_input=False, include_url=False):
        location = error["loc"]
        message = str(error["msg"]).removeprefix("Value error, ")
        field = _field(settings_class, location)
        if field is None or settings_class is None:
            # A rule over several settings (a half key pair): its message names them.
            lines.append(f"bad settings: {message}")
            continue
        name, info = field
        variable = environment_variable(settings_class, name, info)
        detail = _lower_first(message).rstrip(".")
        lines.append(f"bad setting {variable}: expected {requirement(info)}; {detail}.")
    return lines


def environment_variable(settings_class: type[BaseSettings], name: str, info: FieldInfo) -> str:
    """The environment variable that sets field `name` (its first alias, or prefix + NAME)."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def requirement(info: FieldInfo) -> str:
    """What a value of the field must be, in words: "an integer of at least 1", "true or
    false", "one of text, json"..."""
    annotation = info.annotation
    optional = type(None) in typing.get_args(annotation)
    if optional:
        (annotation,) = (arg for arg in typing.get_args(annotation) if arg is not type(None))
    bounds = list(_bounds(info.metadata))
    words = _kind(annotation) + (" " + " and ".join(bounds) if bounds else "")
    return words + (", or unset" if optional else "")


def _field(
    settings_class: type[BaseSettings] | None, location: Iterable[int | str]
) -> tuple[str, FieldInfo] | None:
    if settings_class is None:
        return None
    parts = list(location)
    if not parts:
        return None
    head = str(parts[0])
    fields = settings_class.model_fields
    if head in fields:
        return head, fields[head]
    for name, info in fields.items():  # an alias (ALIBABA_CLOUD_ACCESS_KEY_ID)
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and head in alias.choices:
            return name, info
    return None


def _kind(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_kind(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(arg) for arg in typing.get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is SecretStr or annotation is str:
        return "text"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: Iterable[object]) -> Iterable[str]:
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            yield f"of at least {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            yield f"over {item.gt}"
        elif isinstance(item, annotated_types.Le):
            yield f"of at most {item.le}"
        elif isinstance(item, annotated_types.Lt):
            yield f"under {item.lt}"
        elif isinstance(item, annotated_types.MinLen):
            yield f"of at least {item.min_length} character(s)"
        elif pattern := getattr(item, "pattern", None):
            yield f"matching {pattern}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
