"""Replica settings: list parsing, filled-in URL parts, weights, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncdal import ConfigurationError, load_settings

SECRET = "s3cr@t:/%"
URL_SECRET = "hunter2secret"  # fits in a URL as it is


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("DB__") or name.upper() in {"DATABASE_URL", "WEB_CONCURRENCY"}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_replicas_comma_separated_inherit_the_databases_own_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB__MAIN__URL", "postgresql://app@primary:5433/shop")
    monkeypatch.setenv("DB__MAIN__PASSWORD", SECRET)
    monkeypatch.setenv("DB__MAIN__REPLICAS", "postgresql://r1, postgresql://other@r2:6000/copy")
    monkeypatch.setenv("DB__MAIN__POOL_SIZE", "8")
    monkeypatch.setenv("DB__MAIN__REPLICA_POOL_SIZE", "3")
    monkeypatch.setenv("DB__MAIN__STATEMENT_TIMEOUT", "2")
    main = load_settings().databases["main"]
    first, second = main.replica_settings()
    url = first.sqlalchemy_url()
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "r1",
        5433,
        "app",
        SECRET,
        "shop",
    )
    url = second.sqlalchemy_url()
    assert (url.host, url.port, url.username, url.database) == ("r2", 6000, "other", "copy")
    assert (first.pool.effective_size, main.pool.effective_size) == (3, 8)
    assert first.timeouts.statement == 2  # everything else is the database's own
    assert main.replicas.effective_weights == (1, 1)


def test_replicas_as_a_json_list_with_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB__REFERENCE__URL", "postgresql://u@ref/r")
    monkeypatch.setenv("DB__REFERENCE__REPLICAS", '["postgresql://a", "postgresql://b"]')
    monkeypatch.setenv("DB__REFERENCE__REPLICA_WEIGHTS", "[3, 1]")
    monkeypatch.setenv("DB__REFERENCE__REPLICA_MAX_OVERFLOW", "4")
    reference = load_settings().databases["reference"]
    assert reference.replicas.effective_weights == (3, 1)
    assert [replica.sqlalchemy_url().host for replica in reference.replica_settings()] == [
        "a",
        "b",
    ]
    assert reference.replica_settings()[0].pool.effective_max_overflow == 4
    assert reference.pool.effective_max_overflow == 0


def test_replica_settings_of_one_database_never_leak_to_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB__MAIN__URL", "postgresql://u@main/m")
    monkeypatch.setenv("DB__MAIN__REPLICAS", "postgresql://m-replica")
    monkeypatch.setenv("DB__MAIN__MAX_REPLICA_LAG", "5")
    monkeypatch.setenv("DB__REFERENCE__URL", "postgresql://u@ref/r")
    settings = load_settings()
    assert settings.databases["reference"].replicas.urls == ()
    assert not settings.databases["reference"].replicas
    assert settings.databases["reference"].replicas.max_lag == 30.0
    assert settings.databases["main"].replicas.max_lag == 5


def test_web_concurrency_is_the_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/n")
    assert load_settings().web_concurrency == 1
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    assert load_settings().web_concurrency == 4


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DB__MAIN__REPLICAS", f"mysql://u:{URL_SECRET}@h/n", "DB__MAIN__REPLICAS: replica 1"),
        ("DB__MAIN__REPLICAS", f"postgresql://r1,::{URL_SECRET}", "DB__MAIN__REPLICAS: replica 2"),
        ("DB__MAIN__REPLICAS", '["postgresql://r1"', "DB__MAIN__REPLICAS: not a valid JSON"),
        ("DB__MAIN__REPLICA_WEIGHTS", "1,2,3", "3 weight(s) for 1 replica(s)"),
        ("DB__MAIN__REPLICA_WEIGHTS", "0", "at least 1"),
        ("DB__MAIN__MAX_REPLICA_LAG", "0", "DB__MAIN__MAX_REPLICA_LAG"),
    ],
)
def test_bad_replica_settings_name_the_variable_and_hide_secrets(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("DB__MAIN__URL", f"postgresql://u:{URL_SECRET}@h/n")
    if variable != "DB__MAIN__REPLICAS":
        monkeypatch.setenv("DB__MAIN__REPLICAS", "postgresql://r1")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert URL_SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("replica", "complaint"),
    [
        ("postgresql://u:pa@ss@replica-host/db", "percent-encode the password"),
        ("postgresql://u:hunter2secret@replica-host/db?foo=bar", "unsupported URL parameter"),
        ("postgresql://u:hunter2secret@replica-host/db?sslmode=sometimes", "sslmode must be"),
    ],
)
def test_a_bad_replica_url_is_refused_at_load_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, replica: str, complaint: str
) -> None:
    monkeypatch.setenv("DB__MAIN__URL", "postgresql://app@primary/shop")
    monkeypatch.setenv("DB__MAIN__REPLICAS", f"postgresql://r1,{replica}")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "DB__MAIN__REPLICAS: replica 2:" in message
    assert complaint in message
    assert "pa@ss" not in message
    assert "hunter2" not in message


def test_replicas_inherit_the_primarys_tls_unless_they_set_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB__MAIN__URL", "postgresql://app@primary/shop?sslmode=require")
    monkeypatch.setenv(
        "DB__MAIN__REPLICAS", "postgresql://r1,postgresql://r2?sslmode=prefer,postgresql://r3"
    )
    first, second, third = load_settings().databases["main"].replica_settings()
    required = {"dsn": "postgresql://?sslmode=require"}
    assert first.tls_arguments() == required  # never silently without TLS
    assert second.tls_arguments() == {"dsn": "postgresql://?sslmode=prefer"}  # its own
    assert third.tls_arguments() == required
    assert "sslmode" not in first.sqlalchemy_url().query
