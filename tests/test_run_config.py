"""`taskledger run`'s settings: the command line wins over TASKLEDGER_<OPTION>, which wins
over the configuration file, which wins over the defaults; --print-config says which gave
each, never shows a secret, and prints a file that can be used as one."""

from __future__ import annotations

import re
import tomllib

import pytest
from click.testing import CliRunner

from tools.cli import cli
from tools.run_command import run_command
from tools.run_config import Duration, envvar, option_name, settings

SECRET = "hunter2-very-secret"


def print_config(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["run", *args, "--print-config"], env=env or {})


def sources(output: str) -> dict[str, str]:
    """setting -> where it came from, as the comments say."""
    found = {}
    for line in output.splitlines():
        if line.startswith("# taskledger") or line.startswith("# (the command"):
            continue
        unset = re.match(r"# (\S+): not set \((.*)\)$", line)
        if unset:
            found[unset.group(1)] = unset.group(2)
            continue
        key, _, rest = line.partition(" = ")
        found[key] = rest.rsplit("  # ", 1)[1]
    return found


def test_the_command_line_wins_over_the_environment_over_the_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    config = tmp_path / "taskledger.toml"
    config.write_text(
        'master = "10.0.0.1:5050"\ninstances = 20\njob = "api"\ncmd = "serve"\n'
        f'principal = "ops"\nsecret_file = "{secret}"\nlabel = {{ team = "web" }}\n'
        'failover-timeout = "2d"\n'
    )
    result = print_config(
        "--config",
        str(config),
        "--job",
        "web",
        env={"TASKLEDGER_INSTANCES": "7", "TASKLEDGER_JOB": "env-job", "TASKLEDGER_DRY_RUN": "1"},
    )
    assert result.exit_code == 0, result.output
    values = tomllib.loads(result.output)
    assert values["job"] == "web"  # command line over environment over file
    assert values["instances"] == 7  # environment over file
    assert (values["cmd"], values["master"], values["label"]) == (
        "serve",
        "10.0.0.1:5050",
        ["team=web"],
    )
    assert values["failover-timeout"] == 172800.0 and values["dry-run"] is True
    assert values["cpus"] == 0.1  # the default
    where = sources(result.output)
    assert where["job"] == "command line"
    assert where["instances"] == "environment: TASKLEDGER_INSTANCES"
    assert where["cmd"] == f"file: {config}"
    assert where["cpus"] == "default"
    assert where["role"] == "default"  # not set
    # The secret is never printed; its file is described.
    assert SECRET not in result.output
    assert where["secret-file"] == f"file: {config}; the secret: {len(SECRET) + 1} bytes, not shown"
    # What it printed is a configuration file that gives the same settings.
    again = tmp_path / "again.toml"
    again.write_text(result.output)
    second = print_config("--config", str(again))
    assert tomllib.loads(second.output) == values
    assert {w.split(";")[0] for w in sources(second.output).values()} <= {
        f"file: {again}",
        "default",
    }


def test_every_option_has_its_variable_and_a_key_in_the_file():
    known = settings(run_command)
    assert {"master", "secret-file", "api-token-file", "dry-run", "label", "log"} <= set(known)
    for key, param in known.items():
        assert (
            param.envvar
            == envvar(option_name(param))
            == "TASKLEDGER_" + key.replace("-", "_").upper()
        ), key
    result = print_config(env={"TASKLEDGER_LABEL": "a=1 b=2", "TASKLEDGER_MASTER_TIMEOUT": "2m"})
    values = tomllib.loads(result.output)
    assert values["label"] == ["a=1", "b=2"] and values["master-timeout"] == 120.0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("mastr = 'x'\n", "unknown setting 'mastr' in {path} (did you mean 'master'?)"),
        ("instances = 'many'\n", "bad instances in {path}: 'many' is not a valid integer range."),
        ("dry-run = 'yes'\n", "bad dry-run in {path}: expected true or false, got 'yes'"),
        (
            "instances = \n",
            "configuration file {path} is not TOML: Invalid value (at line 1, column 13)",
        ),
        ("failover-timeout = 'soon'\n", "bad failover-timeout in {path}: 'soon' is not a duration"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, error):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = print_config("--config", str(path))
    assert result.exit_code == 2
    assert result.output.strip().startswith("taskledger run: " + error.format(path=path))
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_file_is_named(tmp_path):
    result = print_config("--config", str(tmp_path / "none.toml"))
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"taskledger run: no configuration file at {tmp_path / 'none.toml'}"
    )


def test_durations():
    convert = Duration().convert
    assert [convert(v, None, None) for v in ("90", "90s", "15m", "12h", "7d", 30)] == [
        90.0,
        90.0,
        900.0,
        43200.0,
        604800.0,
        30.0,
    ]
    with pytest.raises(Exception, match="not a duration"):
        convert("-5", None, None)
