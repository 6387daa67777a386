"""Settings: environment names, URL building, and clear errors that never show a password."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from asyncdal import ConfigurationError, DatabaseSettings, load_settings
from asyncdal.engine._create import connect_arguments

SECRET = "p@ss:/%#?w"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No database variables from the machine, and no .env from the repository."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("DB__") or name.upper() in {
            "DATABASE_URL",
            "AWS_LAMBDA_FUNCTION_NAME",
        }:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def error_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return str(caught.value)


def test_database_url_is_shorthand_for_main(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db.example:6432/catalog")
    main = load_settings().databases["main"]
    url = main.sqlalchemy_url()
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.username, url.database) == (
        "db.example",
        6432,
        "app",
        "catalog",
    )


def test_specific_url_wins_over_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@one/x")
    monkeypatch.setenv("DB__MAIN__URL", "postgresql://a@two/x")
    assert load_settings().databases["main"].sqlalchemy_url().host == "two"


def test_names_are_case_insensitive_and_each_database_is_separate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("db__Main__url", "postgresql://a@main-host/main")
    monkeypatch.setenv("DB__REFERENCE__HOST", "ref-host")
    monkeypatch.setenv("DB__REFERENCE__POOL_SIZE", "2")
    monkeypatch.setenv("DB__MAIN__POOL_SIZE", "7")
    databases = load_settings().databases
    assert set(databases) == {"main", "reference"}
    assert databases["main"].pool.effective_size == 7
    assert databases["reference"].pool.effective_size == 2
    assert databases["reference"].pool.effective_max_overflow == 0
    assert databases["reference"].sqlalchemy_url().host == "ref-host"


def test_every_field_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "HOST": "h",
        "PORT": "5433",
        "USER": "u",
        "PASSWORD": "pw",
        "NAME": "n",
        "POOL": "queue",
        "POOL_SIZE": "3",
        "MAX_OVERFLOW": "4",
        "POOL_TIMEOUT": "2.5",
        "POOL_RECYCLE": "60",
        "PRE_PING": "true",
        "CONNECT_TIMEOUT": "1.5",
        "COMMAND_TIMEOUT": "9",
        "STATEMENT_TIMEOUT": "0.25",
        "LOCK_TIMEOUT": "0.5",
        "IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "RETRY_ATTEMPTS": "5",
        "RETRY_BASE_DELAY": "0.1",
        "RETRY_MAX_DELAY": "2",
        "BREAKER_FAILURE_THRESHOLD": "7",
        "BREAKER_COOL_DOWN": "12",
        "APPLICATION_NAME": "shop",
    }
    for field, value in env.items():
        monkeypatch.setenv(f"DB__MAIN__{field}", value)
    main = load_settings().databases["main"]
    assert main.sqlalchemy_url().render_as_string(hide_password=False) == (
        "postgresql+asyncpg://u:pw@h:5433/n"
    )
    assert (
        main.pool.effective_kind,
        main.pool.effective_size,
        main.pool.effective_max_overflow,
    ) == (
        "queue",
        3,
        4,
    )
    assert (main.pool.timeout, main.pool.recycle, main.pool.pre_ping) == (2.5, 60, True)
    assert (main.timeouts.connect, main.timeouts.command, main.timeouts.statement) == (1.5, 9, 0.25)
    assert (main.timeouts.lock, main.timeouts.idle_in_transaction) == (0.5, 30)
    assert (main.retry.attempts, main.retry.base_delay, main.retry.max_delay) == (5, 0.1, 2)
    assert (main.breaker.failure_threshold, main.breaker.cool_down) == (7, 12)
    assert main.application_name == "shop"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB__MAIN__URL=postgresql://a@from-dotenv/x\n")
    assert load_settings().databases["main"].sqlalchemy_url().host == "from-dotenv"


def test_password_with_special_characters_survives_parts() -> None:
    settings = DatabaseSettings(host="h", user="u", password=SECRET, name="n")
    url = settings.sqlalchemy_url()
    assert url.password == SECRET
    assert make_url(url.render_as_string(hide_password=False)).password == SECRET


def test_parts_override_url_parts() -> None:
    settings = DatabaseSettings(url="postgresql://u@h/n", password=SECRET, port=6543)
    url = settings.sqlalchemy_url()
    assert (url.password, url.port, url.host) == (SECRET, 6543, "h")


def test_postgres_schemes_become_asyncpg() -> None:
    for scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        url = DatabaseSettings(url=f"{scheme}://u@h/n").sqlalchemy_url()
        assert url.drivername == "postgresql+asyncpg"


def test_unix_socket_host_parameter_is_kept() -> None:
    url = DatabaseSettings(url="postgresql://u@/n?host=/run/postgresql").sqlalchemy_url()
    assert url.query["host"] == "/run/postgresql"


def test_tiny_statement_timeout_never_becomes_no_limit() -> None:
    settings = DatabaseSettings(url="postgresql://u@h/n", statement_timeout=0.0001)
    assert connect_arguments(settings)["server_settings"]["statement_timeout"] == "1"


def test_password_never_shown_in_repr_str_or_safe_url() -> None:
    settings = DatabaseSettings(url=f"postgresql://u:{SECRET.replace('@', '%40')}@h/n")
    other = DatabaseSettings(host="h", password=SECRET)
    for text in (repr(settings), str(settings), settings.safe_url, repr(other), other.safe_url):
        assert "p@ss" not in text
        assert "%40ss" not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url at all"}, "DB__MAIN__URL"),
        ({"DATABASE_URL": "mysql://u:pw@h/n"}, "DB__MAIN__URL"),
        ({"DATABASE_URL": "postgresql://u@h/n?sslmode=sometimes"}, "DB__MAIN__URL"),
        ({"DATABASE_URL": "postgresql://u@h/n?sslrootcert=/no/such/file"}, "DB__MAIN__URL"),
        ({"DATABASE_URL": "postgresql://u@h/n?application_name=x"}, "DB__MAIN__URL"),
        ({"DATABASE_URL": "postgresql://u@h:99999/n"}, "DB__MAIN__URL"),
        ({"DATABASE_URL": "postgresql://u@h/n", "DB__SCHEMA": "public"}, "DB__SCHEMA"),
        ({"DATABASE_URL": "postgresql://u@h/n", "DB": "catalog"}, "DB__<NAME>__<FIELD>"),
        ({"DATABASE_URL": "postgresql://u:p@ss@h/n"}, "DB__MAIN__URL"),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__POOL_SIZE": "-1"},
            "DB__MAIN__POOL_SIZE",
        ),
        ({"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__POOL_SIZE": "0"}, "DB__MAIN__POOL_SIZE"),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__MAX_OVERFLOW": "-3"},
            "DB__MAIN__MAX_OVERFLOW",
        ),
        (
            {
                "DATABASE_URL": "postgresql://u@h/n",
                "DB__MAIN__POOL": "null",
                "DB__MAIN__POOL_SIZE": "5",
            },
            "DB__MAIN__POOL_SIZE",
        ),
        ({"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__POOL": "lots"}, "DB__MAIN__POOL"),
        ({"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__PORT": "http"}, "DB__MAIN__PORT"),
        ({"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__POOLSIZE": "3"}, "DB__MAIN__POOLSIZE"),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__REFERENCE__POOL_SIZE": "3"},
            "DB__REFERENCE__URL",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__RETRY_ATTEMPTS": "0"},
            "DB__MAIN__RETRY_ATTEMPTS",
        ),
        (
            {
                "DATABASE_URL": "postgresql://u@h/n",
                "DB__MAIN__RETRY_BASE_DELAY": "2",
                "DB__MAIN__RETRY_MAX_DELAY": "1",
            },
            "DB__MAIN__RETRY_MAX_DELAY",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__BREAKER_FAILURE_THRESHOLD": "0"},
            "DB__MAIN__BREAKER_FAILURE_THRESHOLD",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__BREAKER_COOL_DOWN": "0"},
            "DB__MAIN__BREAKER_COOL_DOWN",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/n", "DB__MAIN__LOCK_TIMEOUT": "-1"},
            "DB__MAIN__LOCK_TIMEOUT",
        ),
    ],
)
def test_bad_configuration_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    message = error_of(monkeypatch, **env)
    assert variable in message


def test_errors_never_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(
        monkeypatch, DATABASE_URL=f"mysql://u:{SECRET}@h/n", DB__MAIN__POOL_SIZE="-1"
    )
    assert "p@ss" not in message
    assert "DB__MAIN__POOL_SIZE" in message
    monkeypatch.delenv("DB__MAIN__POOL_SIZE")
    broken = error_of(monkeypatch, DATABASE_URL="postgresql://u:hunter2@h:notaport/n")
    assert "hunter2" not in broken
    in_query = error_of(monkeypatch, DATABASE_URL="postgresql://u@h/n?password=hunter2")
    assert "hunter2" not in in_query
    unencoded = error_of(monkeypatch, DATABASE_URL="postgresql://u:hun@ter2@h/n")
    assert "ter2" not in unencoded
    assert "percent-encode" in unencoded


def test_null_pool_defaults_on_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/n")
    assert load_settings().databases["main"].pool.effective_kind == "queue"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "catalog")
    main = load_settings().databases["main"]
    assert main.pool.effective_kind == "null"
    assert (main.pool.effective_size, main.pool.effective_max_overflow) == (0, 0)
    monkeypatch.setenv("DB__MAIN__POOL", "queue")
    assert load_settings().databases["main"].pool.effective_kind == "queue"


SIZING_ON_LAMBDA = {
    "DATABASE_URL": "postgresql://u@h/n",
    "DB__MAIN__POOL_SIZE": "5",
    "DB__MAIN__MAX_OVERFLOW": "2",
    "AWS_LAMBDA_FUNCTION_NAME": "catalog",
}


def _settings_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("asyncdal.settings") and record.levelno == logging.INFO
    ]


@pytest.mark.parametrize("source", ["environment", ".env"])
def test_lambda_null_pool_ignores_sizing_with_one_info_line(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    source: str,
) -> None:
    # One configuration serves a server (pooled) and Lambda (null pool, sizing ignored).
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", SIZING_ON_LAMBDA["AWS_LAMBDA_FUNCTION_NAME"])
    sizing = {key: value for key, value in SIZING_ON_LAMBDA.items() if key.startswith("D")}
    if source == ".env":
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in sizing.items()))
    else:
        for name, value in sizing.items():
            monkeypatch.setenv(name, value)
    with caplog.at_level(logging.INFO, logger="asyncdal.settings"):
        main = load_settings().databases["main"]
    assert main.pool.effective_kind == "null"
    assert (main.pool.effective_size, main.pool.effective_max_overflow) == (0, 0)
    assert (main.pool.size, main.pool.max_overflow) == (None, None)  # dropped, not kept
    [line] = _settings_records(caplog)
    assert "DB__MAIN__POOL_SIZE" in line
    assert "DB__MAIN__MAX_OVERFLOW" in line
    assert "AWS_LAMBDA_FUNCTION_NAME" in line


def test_the_same_sizing_pools_outside_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SIZING_ON_LAMBDA.items():
        if name != "AWS_LAMBDA_FUNCTION_NAME":
            monkeypatch.setenv(name, value)
    main = load_settings().databases["main"]
    assert (
        main.pool.effective_kind,
        main.pool.effective_size,
        main.pool.effective_max_overflow,
    ) == (
        "queue",
        5,
        2,
    )


def test_lambda_without_sizing_logs_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/n")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "catalog")
    with caplog.at_level(logging.INFO, logger="asyncdal.settings"):
        assert load_settings().databases["main"].pool.effective_kind == "null"
    assert _settings_records(caplog) == []


@pytest.mark.parametrize("on_lambda", [False, True])
@pytest.mark.parametrize("field", ["POOL_SIZE", "MAX_OVERFLOW"])
def test_an_explicit_null_pool_with_sizing_is_still_an_error(
    monkeypatch: pytest.MonkeyPatch, field: str, on_lambda: bool
) -> None:
    if on_lambda:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "catalog")
    message = error_of(
        monkeypatch,
        DATABASE_URL="postgresql://u@h/n",
        DB__MAIN__POOL="null",
        **{f"DB__MAIN__{field}": "5"},
    )
    assert f"DB__MAIN__{field}: cannot be set when the pool is null" in message


def test_with_null_pool_drops_the_sizing_and_keeps_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pooled = DatabaseSettings(
        url="postgresql://u@h/n",
        password=SECRET,
        pool="queue",
        pool_size=5,
        max_overflow=2,
        replicas=("postgresql://r1",),
        replica_pool_size=3,
        application_name="shop",
    )
    with caplog.at_level(logging.INFO, logger="asyncdal.settings"):
        single = pooled.with_null_pool()
    assert single.pool.kind == "null"
    assert (single.pool.size, single.pool.max_overflow, single.replicas.pool_size) == (
        None,
        None,
        None,
    )
    assert (single.pool.effective_size, single.pool.effective_max_overflow) == (0, 0)
    assert single.sqlalchemy_url() == pooled.sqlalchemy_url()
    assert single.application_name == "shop"
    assert [replica.pool.effective_kind for replica in single.replica_settings()] == ["null"]
    [line] = _settings_records(caplog)
    assert "POOL_SIZE, MAX_OVERFLOW, REPLICA_POOL_SIZE not used" in line
    assert "p@ss" not in line
    # Already null and unsized: the same settings, and nothing to say.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="asyncdal.settings"):
        assert single.with_null_pool() == single
        assert pooled.with_null_pool(log=False).pool.kind == "null"
    assert _settings_records(caplog) == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {
                "DATABASE_URL": "postgresql://u:hunter2@h/n?foo=1",
                "DB__MAIN__POOL_SIZE": "abc",
            },
            ["DB__MAIN__POOL_SIZE: ", "DB__MAIN__URL (or DATABASE_URL): unsupported URL parameter"],
        ),
        (
            {
                "DATABASE_URL": "postgresql://u:hunter2@h/n?sslmode=sometimes",
                "DB__MAIN__POOL": "null",
                "DB__MAIN__POOL_SIZE": "4",
                "DB__MAIN__RETRY_BASE_DELAY": "2",
                "DB__MAIN__RETRY_MAX_DELAY": "1",
                "DB__MAIN__REPLICAS": "postgresql://r1,mysql://u:hunter2@r2/x",
                "DB__MAIN__CONNECT_TIMEOUT": "0",
                "DB__REFERENCE__POOL_SIZE": "x",
                "DB__REPORTING__POOL_SIZE": "2",
            },
            [
                "DB__MAIN__URL (or DATABASE_URL): sslmode must be",
                "DB__MAIN__POOL_SIZE: cannot be set when the pool is null",
                "DB__MAIN__RETRY_MAX_DELAY: 1.0 is below RETRY_BASE_DELAY",
                "DB__MAIN__REPLICAS: replica 2: unsupported scheme",
                "DB__MAIN__CONNECT_TIMEOUT: ",
                "DB__REFERENCE__POOL_SIZE: ",
                "DB__REFERENCE__URL: missing",
                "DB__REPORTING__URL: missing",
            ],
        ),
        (
            {
                "DATABASE_URL": "postgresql://u@h/n",
                "DB__MAIN__REPLICAS": "postgresql://r1,postgresql://r2",
                "DB__MAIN__REPLICA_WEIGHTS": "1,2,3",
                "DB__MAIN__POOL_SIZE": "0",
            },
            [
                "DB__MAIN__REPLICA_WEIGHTS: 3 weight(s) for 2 replica(s)",
                "DB__MAIN__POOL_SIZE: must be at least 1 for a queue pool",
            ],
        ),
    ],
)
def test_every_problem_is_reported_at_once(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: list[str]
) -> None:
    message = error_of(monkeypatch, **env)
    for problem in expected:
        assert problem in message
    lines = message.splitlines()[1:]
    assert len(lines) == len(expected), message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "fields",
    [
        {"url": "postgresql://u:hunter2@h/n?foo=1"},
        {"url": "postgresql://u:hunter2@h/n", "pool": "null", "pool_size": 3},
        {"url": "postgresql://u:hunter2@h/n", "replicas": "mysql://u:hunter2@r/n"},
    ],
)
def test_errors_of_settings_made_in_code_never_show_the_password(fields: dict[str, object]) -> None:
    # pydantic's own message would show the input: the URL, password and all.
    with pytest.raises(ValidationError) as caught:
        DatabaseSettings.model_validate(fields)
    assert "hunter2" not in str(caught.value)
