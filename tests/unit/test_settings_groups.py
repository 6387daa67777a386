"""Settings grouped by concern: every flat environment name fills its group's field, in the
environment, in code and in errors; the settings page (docs/guide/settings.md) and .env.example
list the same names."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from asyncdal import ConfigurationError, Database, DatabaseSettings, load_settings
from asyncdal.orm._budget import budget_lines
from asyncdal.settings import PoolSettings, ReplicaSettings, TimeoutSettings
from asyncdal.settings._flat import FLAT_NAMES
from asyncdal.settings._groups import GROUPS

ROOT = Path(__file__).parents[2]
URL = "postgresql://u@h/n"
REPLICA = "postgresql://r1"

# Each flat name: its text in the environment, the value it gives (never the default, so a
# name that lands in the wrong place fails), and what else it needs.
SAMPLES: dict[str, tuple[str, Any, dict[str, str]]] = {
    "pool": ("queue", "queue", {}),
    "pool_size": ("3", 3, {}),
    "max_overflow": ("4", 4, {}),
    "pool_timeout": ("2.5", 2.5, {}),
    "pool_recycle": ("60", 60, {}),
    "pre_ping": ("true", True, {}),
    "connect_timeout": ("1.5", 1.5, {}),
    "command_timeout": ("9", 9.0, {}),
    "statement_timeout": ("0.25", 0.25, {}),
    "lock_timeout": ("0.5", 0.5, {}),
    "idle_in_transaction_session_timeout": ("30", 30.0, {}),
    "retry_attempts": ("5", 5, {}),
    "retry_base_delay": ("0.1", 0.1, {}),
    "retry_max_delay": ("2", 2.0, {}),
    "breaker_failure_threshold": ("7", 7, {}),
    "breaker_cool_down": ("12", 12.0, {}),
    "replicas": (REPLICA, (REPLICA,), {}),
    "replica_weights": ("3", (3,), {"REPLICAS": REPLICA}),
    "replica_pool_size": ("2", 2, {}),
    "replica_max_overflow": ("1", 1, {}),
    "max_replica_lag": ("5", 5.0, {}),
    "replica_check_interval": ("0.5", 0.5, {}),
    "slow_query_seconds": ("1", 1.0, {}),
    "tag_requests": ("true", True, {}),
    "pgbouncer": ("true", True, {}),
    "lazy_loads": ("warn", "warn", {}),
    "max_queries_per_request": ("20", 20, {}),
    "leak_detection_seconds": ("2.5", 2.5, {}),
    "idle_hold_seconds": ("0.5", 0.5, {}),
    "request_timeout": ("3", 3.0, {}),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No database variables from the machine, and no .env from the repository."""
    for name in list(os.environ):
        if name.upper().startswith("DB__") or name.upper() in {
            "DATABASE_URL",
            "AWS_LAMBDA_FUNCTION_NAME",
        }:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def grouped(settings: DatabaseSettings, flat: str) -> Any:
    group, field = FLAT_NAMES[flat]
    value = getattr(getattr(settings, group), field)
    if isinstance(value, tuple) and value and isinstance(value[0], SecretStr):
        return tuple(item.get_secret_value() for item in value)
    return value


def top_level_names() -> set[str]:
    """The variables of the fields at the top of DatabaseSettings (url, host, ...)."""
    return {name.upper() for name in DatabaseSettings.model_fields if name not in GROUPS}


def page_rows() -> dict[str, str]:
    """Each DB__<NAME>__* variable of docs/guide/settings.md's table, and its attribute."""
    rows: dict[str, str] = {}
    for line in (ROOT / "docs" / "guide" / "settings.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 4 or not cells[1].startswith("`DB__<NAME>__"):
            continue
        names = [name.removeprefix("DB__<NAME>").removeprefix("__") for name in _code(cells[1])]
        attributes = _code(cells[2])
        assert len(names) == len(attributes), line
        rows.update(zip(names, attributes, strict=True))
    return rows


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_settings_page_lists_every_variable_where_it_lands() -> None:
    expected = {name: name.lower() for name in top_level_names()}
    expected |= {flat.upper(): ".".join(place) for flat, place in FLAT_NAMES.items()}
    assert page_rows() == expected


def test_env_example_lists_every_variable() -> None:
    listed = set(re.findall(r"^# DB__MAIN__(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert listed == top_level_names() | {flat.upper() for flat in FLAT_NAMES}


def test_every_group_field_has_exactly_one_flat_name() -> None:
    fields = {(group, field) for group, model in GROUPS.items() for field in model.model_fields}
    assert sorted(FLAT_NAMES.values()) == sorted(fields)
    models = {
        name: info.annotation
        for name, info in DatabaseSettings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    assert models == GROUPS


def test_every_flat_name_has_a_sample() -> None:
    assert set(SAMPLES) == set(FLAT_NAMES)


@pytest.mark.parametrize("flat", sorted(FLAT_NAMES))
def test_every_variable_fills_its_group(monkeypatch: pytest.MonkeyPatch, flat: str) -> None:
    text, value, others = SAMPLES[flat]
    monkeypatch.setenv("DATABASE_URL", URL)
    for name, other in {flat.upper(): text, **others}.items():
        monkeypatch.setenv(f"DB__MAIN__{name}", other)
    main = load_settings().databases["main"]
    group, field = FLAT_NAMES[flat]
    assert grouped(main, flat) == value
    assert field in getattr(main, group).model_fields_set
    assert main.flat_fields_set == {"url", flat, *(name.lower() for name in others)}


@pytest.mark.parametrize("flat", sorted(FLAT_NAMES))
def test_every_flat_keyword_fills_its_group(flat: str) -> None:
    _, value, others = SAMPLES[flat]
    extra = {name.lower(): (other,) for name, other in others.items()}
    settings = DatabaseSettings(url=URL, **{flat: value}, **extra)
    assert grouped(settings, flat) == value
    assert settings.flat_fields_set == {"url", flat, *extra}


def test_a_group_may_be_given_whole_as_a_mapping_or_a_model() -> None:
    as_mapping = DatabaseSettings(url=URL, pool={"size": 5}, timeouts={"command": None})
    assert (as_mapping.pool.size, as_mapping.timeouts.command) == (5, None)
    as_model = DatabaseSettings(url=URL, pool=PoolSettings(size=5), pool_timeout=3)
    assert (as_model.pool.size, as_model.pool.timeout) == (5, 3)
    assert as_model.pool.model_fields_set == {"size", "timeout"}
    replicas = DatabaseSettings(
        url=URL, replicas=ReplicaSettings(urls=(REPLICA,)), max_replica_lag=4
    )
    assert (len(replicas.replicas.urls), replicas.replicas.max_lag) == (1, 4)
    # The flat POOL and REPLICAS share their group's name: text or a list is the flat setting.
    assert DatabaseSettings(url=URL, pool="null").pool.kind == "null"
    assert DatabaseSettings(url=URL, replicas=[REPLICA]).replicas.urls[0].get_secret_value() == (
        REPLICA
    )


def test_a_setting_given_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"POOL_SIZE: given twice, as pool_size and as pool"):
        DatabaseSettings(url=URL, pool={"size": 5}, pool_size=6)


def test_groups_are_frozen_and_checked_on_their_own() -> None:
    with pytest.raises(ValidationError):
        DatabaseSettings(url=URL).pool.size = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="cannot be set when the pool is null"):
        PoolSettings(kind="null", size=2)
    with pytest.raises(ValidationError, match="Extra inputs"):
        TimeoutSettings(conect=1)  # type: ignore[call-arg]


# One bad value per group, each named by its variable, all in one message.
BAD = {
    "POOL_TIMEOUT": "0",
    "STATEMENT_TIMEOUT": "0",
    "RETRY_BASE_DELAY": "-1",
    "BREAKER_COOL_DOWN": "-2",
    "REPLICA_CHECK_INTERVAL": "0",
    "SLOW_QUERY_SECONDS": "0",
    "PGBOUNCER": "sometimes",
    "LAZY_LOADS": "sometimes",
}


def test_a_bad_value_in_each_group_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    for name, value in BAD.items():
        monkeypatch.setenv(f"DB__MAIN__{name}", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()[1:]
    assert sorted(line.strip().partition(":")[0] for line in lines) == sorted(
        f"DB__MAIN__{name}" for name in BAD
    )
    assert {FLAT_NAMES[name.lower()][0] for name in BAD} == set(GROUPS)


@pytest.mark.parametrize(
    "variable",
    ["DB__MAIN__POOL_SIZ", "DB__MAIN__POOL__SIZE", "DB__MAIN__TIMEOUTS__CONNECT"],
)
def test_an_unknown_or_nested_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv(variable, "3")
    with pytest.raises(ConfigurationError, match=f"{variable}: unknown setting"):
        load_settings()


def test_a_group_is_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("DB__MAIN__TIMEOUTS", '{"connect": 5}')
    with pytest.raises(ConfigurationError, match="DB__MAIN__TIMEOUTS: unknown setting"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("COMMAND_TIMEOUT", "null", "DB__MAIN__COMMAND_TIMEOUT: "),
        ("POOL_SIZE", '"5"', "DB__MAIN__POOL_SIZE: "),
        ("REPLICA_WEIGHTS", "0", "DB__MAIN__REPLICA_WEIGHTS: every weight must be at least 1"),
    ],
)
def test_a_flat_variable_is_read_as_text_never_as_json(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    # As when each was a field of its own: "null" is no number, "0" a list of one weight.
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("DB__MAIN__REPLICAS", REPLICA)
    monkeypatch.setenv(f"DB__MAIN__{variable}", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert complaint in str(caught.value)


def test_fields_set_keep_their_meaning() -> None:
    settings = DatabaseSettings(url=URL, pool_size=5, optional=True)
    assert settings.model_fields_set == {"url", "pool", "optional"}
    assert settings.pool.model_fields_set == {"size"}
    assert settings.timeouts.model_fields_set == set()
    assert settings.flat_fields_set == {"url", "pool_size", "optional"}
    assert DatabaseSettings(url=URL).flat_fields_set == {"url"}
    # A copy keeps what was set, and only that.
    changed = settings.replace(command_timeout=5)
    assert changed.flat_fields_set == {"url", "pool_size", "optional", "command_timeout"}
    assert changed.model_fields_set == {"url", "pool", "optional", "timeouts"}
    single = settings.with_null_pool(log=False)
    assert single.flat_fields_set == {"url", "pool", "optional"}


def test_replace_merges_a_mapping_into_its_group_and_a_model_replaces_it() -> None:
    settings = DatabaseSettings(url=URL, pool_size=5, pool_timeout=3)
    merged = settings.replace(pool={"size": 2})
    assert (merged.pool.size, merged.pool.timeout) == (2, 3)
    replaced = settings.replace(pool=PoolSettings(size=2))
    assert (replaced.pool.size, replaced.pool.timeout) == (2, 30)
    with pytest.raises(ValidationError, match="POOL_SIZE"):
        settings.replace(pool_size=0)


def test_model_copy_refuses_a_flat_name() -> None:
    # model_copy validates nothing: a flat name would be kept as a stray attribute and do
    # nothing at all. replace() takes it.
    settings = DatabaseSettings(url=URL)
    with pytest.raises(TypeError, match="pool_size: not field"):
        settings.model_copy(update={"pool_size": 1})
    with pytest.raises(TypeError, match="size_"):
        settings.pool.model_copy(update={"size_": 1})
    assert settings.model_copy(update={"optional": True}).optional


def test_with_settings_takes_flat_names_and_groups() -> None:
    database = Database("main", DatabaseSettings(url=URL, pool_size=5, command_timeout=4))
    derived = database.with_settings(pool_size=2, timeouts={"connect": 3})
    assert (derived.settings.pool.size, derived.settings.timeouts.connect) == (2, 3)
    assert derived.settings.timeouts.command == 4


def test_replicas_are_true_only_when_there_are_some() -> None:
    assert not DatabaseSettings(url=URL).replicas
    assert DatabaseSettings(url=URL, replicas=REPLICA).replicas


def test_replica_sizing_is_dropped_under_lambda_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "catalog")
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("DB__MAIN__REPLICAS", REPLICA)
    monkeypatch.setenv("DB__MAIN__REPLICA_POOL_SIZE", "4")
    with caplog.at_level(logging.INFO, logger="asyncdal.settings"):
        main = load_settings().databases["main"]
    assert main.replicas.pool_size is None
    assert [replica.pool.effective_kind for replica in main.replica_settings()] == ["null"]
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("DB__MAIN__REPLICA_POOL_SIZE not used")
    # An explicit pool kind keeps the replicas' sizing, on Lambda too.
    monkeypatch.setenv("DB__MAIN__POOL", "queue")
    main = load_settings().databases["main"]
    assert [replica.pool.effective_size for replica in main.replica_settings()] == [4]


def test_replica_settings_take_the_replica_sizing_and_keep_the_rest() -> None:
    main = DatabaseSettings(
        url=URL, pool_size=8, replicas=(REPLICA,), replica_max_overflow=2, statement_timeout=3
    )
    [replica] = main.replica_settings()
    assert (replica.pool.size, replica.pool.max_overflow) == (8, 2)
    assert replica.timeouts.statement == 3
    assert not replica.replicas


def test_the_replica_checks_engines_are_single_connection_queue_pools() -> None:
    main = DatabaseSettings(url=URL, pool="null", replicas=(REPLICA,))
    lines = {line.node: line for line in budget_lines({"main": main}, 1)}
    for node in ("primary check", "replica-1 check"):
        assert (lines[node].pool, lines[node].pool_size, lines[node].max_overflow) == (
            "queue",
            1,
            0,
        )
    assert lines["primary"].pool == "null"
