"""The settings as `--help` lists them: each environment variable, its default, what it does."""

from __future__ import annotations

import textwrap

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from gateway.startup import environment_variable

__all__ = ["settings_epilog"]

_WIDTH = 100


def settings_epilog(settings_class: type[BaseSettings]) -> str:
    """Every setting of `settings_class`: its variable, its default and its description."""
    lines = ["environment variables (default in brackets):"]
    for name, info in settings_class.model_fields.items():
        variable = environment_variable(settings_class, name, info)
        default = info.default
        if isinstance(default, SecretStr):
            shown = "(a demo value)"  # the simulator's published demo secret, yet no echo
        elif default is None:
            shown = "unset"
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        lines.append(f"  {variable} [{shown}]")
        lines += textwrap.wrap(
            info.description or "",
            width=_WIDTH,
            initial_indent="      ",
            subsequent_indent="      ",
        )
    return "\n".join(lines)
