"""Where `taskledger run`'s settings come from: the command line, the environment, a file.

Every option of `run` can be given three ways besides its default, and the first found wins:

1. the command line (``--instances 20``);
2. an environment variable ``TASKLEDGER_<OPTION>`` (``TASKLEDGER_INSTANCES=20``; a flag takes
   1/true/yes or 0/false/no; a repeatable option takes its values separated by spaces);
3. a TOML file named by ``--config FILE`` (or ``TASKLEDGER_CONFIG``), whose keys are the
   options' long names (``instances = 20``, ``secret-file = "/etc/taskledger/secret"``).

click does the ordering (an option's envvar, then the context's ``default_map``, which this
module fills from the file). ``--print-config`` prints the effective settings as a TOML file
that can be used as one, each line saying where its value came from, secrets masked.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

ENV_PREFIX = "TASKLEDGER_"
CONFIG_ENVVAR = "TASKLEDGER_CONFIG"
# Parameters that are about reading settings, not settings themselves.
_NOT_SETTINGS = frozenset({"config", "print_config"})


def envvar(option: str) -> str:
    """The environment variable of an option: ``--secret-file`` -> TASKLEDGER_SECRET_FILE."""
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def setting(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """click.option with its TASKLEDGER_<OPTION> variable (shown in --help)."""
    long = next(d for d in decls if d.startswith("--"))
    kwargs.setdefault("envvar", envvar(long))
    kwargs.setdefault("show_envvar", True)
    return click.option(*decls, **kwargs)


def option_name(param: click.Parameter) -> str:
    """The option's long name without dashes (``secret-file``): its key in the file."""
    longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
    return longs[0][2:] if longs else str(param.name)


class ConfigError(click.ClickException):
    """A configuration file that cannot be used: one line, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"taskledger run: {self.message}", err=True)


def settings(command: click.Command) -> dict[str, click.Parameter]:
    """The command's settings by their key in the file (``secret-file``)."""
    return {
        option_name(p): p
        for p in command.params
        if isinstance(p, click.Option) and p.name not in _NOT_SETTINGS and not p.hidden
    }


def read_file(path: str, command: click.Command) -> dict[str, Any]:
    """The file's settings as click's default_map (parameter name -> value), each value
    checked with its option's type; ConfigError names the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no configuration file at {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a folder") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration file {path} is not TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    known = settings(command)
    default_map: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        param = known.get(name)
        if param is None:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {key!r} in {path}{hint}")
        default_map[str(param.name)] = _checked(path, key, param, value)
    return default_map


def _checked(path: str, key: str, param: click.Parameter, value: Any) -> Any:
    if isinstance(value, dict):
        if not param.multiple:
            raise ConfigError(f"bad {key} in {path}: expected a single value, got a table")
        value = [f"{k}={v}" for k, v in value.items()]  # label = {team = "web"}
    if param.multiple and not isinstance(value, list):
        value = [value]
    if isinstance(param, click.Option) and param.is_flag and not isinstance(value, bool):
        raise ConfigError(f"bad {key} in {path}: expected true or false, got {value!r}")
    try:
        if param.multiple:
            return [param.type.convert(v, param, None) for v in value]
        return param.type.convert(value, param, None)
    except click.BadParameter as e:
        raise ConfigError(f"bad {key} in {path}: {e.message}") from None


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE``: read before the other options, so they fall back to it."""

    def load(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.default_map = {**(ctx.default_map or {}), **read_file(value, ctx.command)}
        return value

    return click.option(
        "--config",
        metavar="FILE",
        envvar=CONFIG_ENVVAR,
        is_eager=True,
        expose_value=True,
        callback=load,
        help="a TOML file of settings (keys: these options' names); the command line and "
        f"{ENV_PREFIX}<OPTION> variables win over it",
    )(command)


def source_of(ctx: click.Context, param: click.Parameter, config: str | None) -> str:
    """Where the parameter's value came from, in words."""
    source = ctx.get_parameter_source(str(param.name))
    if source is ParameterSource.COMMANDLINE:
        return "command line"
    if source is ParameterSource.ENVIRONMENT:
        return f"environment: {envvar(option_name(param))}"
    if source is ParameterSource.DEFAULT_MAP:
        return f"file: {config}"
    return "default"


def toml_value(value: Any) -> str:
    """A value as TOML (strings in JSON's escaping, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def render(
    ctx: click.Context,
    values: dict[str, Any],
    *,
    config: str | None,
    notes: dict[str, str] | None = None,
) -> str:
    """The effective settings as a TOML document with each value's source as a comment;
    ``notes`` adds a remark to a setting (e.g. what a secret file holds, masked)."""
    notes = notes or {}
    lines = [
        "# taskledger run: the effective settings and where each came from",
        f"# (the command line wins over {ENV_PREFIX}* variables, which win over the "
        "configuration file, which wins over the defaults)",
    ]
    for key, param in settings(ctx.command).items():
        value = values.get(str(param.name))
        where = source_of(ctx, param, config)
        note = notes.get(key)
        remark = f"{where}; {note}" if note else where
        if value is None or value == () or value == []:
            lines.append(f"# {key}: not set ({remark})")
            continue
        if isinstance(value, dict):  # --label's parsed form
            value = [f"{k}={v}" for k, v in value.items()]
        lines.append(f"{key} = {toml_value(value)}  # {remark}")
    return "\n".join(lines) + "\n"


def file_note(path: str | None, what: str) -> str | None:
    """What a secret file holds, masked (for --print-config), or why it cannot be read."""
    if path is None:
        return None
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"{what}: cannot read {path}: {e.strerror}"
    return f"{what}: {size} bytes, not shown"


class Duration(click.ParamType):
    """Seconds, as a number or with a unit: 90, 90s, 15m, 12h, 7d."""

    name = "duration"
    UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            unit = self.UNITS.get(text[-1:]) if text else None
            number = text[:-1] if unit is not None else text
            try:
                seconds = float(number) * (unit or 1.0)
            except ValueError:
                self.fail(f"{value!r} is not a duration (e.g. 90, 90s, 15m, 12h, 7d)", param, ctx)
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not a duration >= 0", param, ctx)
        return seconds
