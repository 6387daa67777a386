"""TLS settings: libpq's URL parameters, checked at load and handed to asyncpg unchanged.

What asyncpg then does with them (verification, the fallback of ``prefer``, client
certificates) is tested against a real server in ``tests/integration/test_tls.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from asyncdal import ConfigurationError, DatabaseSettings, load_settings
from asyncdal.engine._create import connect_arguments
from tests.certificates import Certificates, make_certificates

PASSWORD = "hunter2"
KEY_PASSWORD = "hunter3"
BASE = f"postgresql://app:{PASSWORD}@db.internal/shop"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No database or libpq variables from the machine, no .env, and an empty home folder
    (so no ``~/.postgresql/root.crt`` of the machine's counts)."""
    for name in list(os.environ):
        if name.upper().startswith(("DB__", "PGSSL")) or name.upper() in {
            "DATABASE_URL",
            "AWS_LAMBDA_FUNCTION_NAME",
        }:
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


def dsn_query(settings: DatabaseSettings) -> dict[str, str]:
    """The TLS parameters asyncpg is given, as its DSN parser reads them."""
    arguments = connect_arguments(settings)
    assert "ssl" not in arguments  # asyncpg would then ignore the DSN's sslmode
    parts = urlsplit(arguments["dsn"])
    # Only the query: host, user, password and database come from SQLAlchemy's arguments.
    assert (parts.scheme, parts.netloc, parts.path) == ("postgresql", "", "")
    return {key: value for key, [value] in parse_qs(parts.query, strict_parsing=True).items()}


def load_error(monkeypatch: pytest.MonkeyPatch, url: str, variable: str = "DB__MAIN__URL") -> str:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message
    assert PASSWORD not in message
    assert KEY_PASSWORD not in message
    return message


def test_without_tls_parameters_asyncpg_keeps_its_defaults() -> None:
    settings = DatabaseSettings(url=BASE)
    assert settings.tls_arguments() == {}
    assert {"ssl", "dsn"}.isdisjoint(connect_arguments(settings))


def test_tls_parameters_go_to_asyncpg_as_they_are(certificates: Certificates) -> None:
    query = (
        f"sslmode=verify-full&sslrootcert={certificates.ca}&sslcert={certificates.client_cert}"
        f"&sslkey={certificates.client_key}&ssl_min_protocol_version=TLSv1.3"
    )
    settings = DatabaseSettings(url=f"{BASE}?{query}")
    assert dsn_query(settings) == {
        "sslmode": "verify-full",
        "sslrootcert": str(certificates.ca),
        "sslcert": str(certificates.client_cert),
        "sslkey": str(certificates.client_key),
        "ssl_min_protocol_version": "TLSv1.3",
    }
    assert dict(settings.sqlalchemy_url().query) == {}
    assert "ssl" not in settings.safe_url


def test_a_bare_sslmode_is_passed_on() -> None:
    assert dsn_query(DatabaseSettings(url=f"{BASE}?sslmode=require")) == {"sslmode": "require"}
    # asyncpg's own spelling, as accepted before: the same as sslmode.
    assert dsn_query(DatabaseSettings(url=f"{BASE}?ssl=require")) == {"sslmode": "require"}


@pytest.mark.parametrize("mode", ["prefer", "allow"])
def test_prefer_and_allow_with_client_certificates_stay_what_they_are(
    certificates: Certificates, mode: str
) -> None:
    # They used to become an SSLContext, which forces TLS on: no fallback to plain any more.
    client = f"sslcert={certificates.client_cert}&sslkey={certificates.client_key}"
    url = f"{BASE}?sslmode={mode}&{client}"
    assert dsn_query(DatabaseSettings(url=url))["sslmode"] == mode


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_a_verify_mode_without_a_root_certificate_is_refused_naming_sslrootcert(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates, mode: str
) -> None:
    # This used to build a context that verified nothing (verify-ca) or failed to build one
    # (verify-full): the server's certificate can only be verified against a CA.
    message = load_error(
        monkeypatch,
        f"{BASE}?sslmode={mode}&sslcert={certificates.client_cert}"
        f"&sslkey={certificates.client_key}",
    )
    assert f"sslmode={mode} needs sslrootcert" in message
    assert "~/.postgresql/root.crt" in message


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full", "require"])
def test_the_default_root_certificate_counts_as_libpq_says(
    certificates: Certificates, mode: str
) -> None:
    home = Path(os.environ["HOME"])
    (home / ".postgresql").mkdir()
    (home / ".postgresql" / "root.crt").write_bytes(certificates.ca.read_bytes())
    settings = DatabaseSettings(url=f"{BASE}?sslmode={mode}")
    # asyncpg finds it itself (and then verifies the server even under require, like libpq).
    assert dsn_query(settings) == {"sslmode": mode}


def test_pgsslrootcert_counts_as_the_root_certificate(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(certificates.ca))
    assert dsn_query(DatabaseSettings(url=f"{BASE}?sslmode=verify-full")) == {
        "sslmode": "verify-full"
    }


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("sslmode=sometimes", "sslmode must be one of"),
        ("ssl=true", "sslmode must be one of"),
        ("sslmode=require&ssl=require", "give sslmode or ssl, not both"),
        ("sslmode=require&sslmode=disable", "sslmode is given more than once"),
        ("sslmode=verify-ca&sslrootcert=/no/such/ca.crt", "sslrootcert: no such file"),
        ("sslmode=require&sslcert=/no/such/client.crt", "sslcert: no such file"),
        ("sslmode=require&sslkey=/no/such/client.key", "sslkey: no such file"),
        ("sslmode=require&sslcrl=/no/such/root.crl", "sslcrl: no such file"),
        ("sslmode=verify-ca&sslrootcert={folder}", "sslrootcert: '{folder}' is not a file"),
        ("sslmode=verify-ca&sslrootcert={client_key}", "sslrootcert: cannot load"),
        ("sslmode=verify-full&sslrootcert=system", "sslrootcert=system"),
        (
            "sslmode=require&sslcert={client_cert}&sslkey={server_key}",
            "sslcert/sslkey: cannot load",
        ),
        (f"sslmode=require&sslpassword={KEY_PASSWORD}&sslcert=/no/such", "sslcert: no such file"),
        ("sslnegotiation=sideways", "sslnegotiation must be one of"),
        ("sslmode=prefer&sslnegotiation=direct", "sslnegotiation=direct needs sslmode"),
        ("ssl_min_protocol_version=SSLv3", "ssl_min_protocol_version must be one of"),
        ("ssl_max_protocol_version=TLSv9", "ssl_max_protocol_version must be one of"),
        (
            "ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2",
            "ssl_min_protocol_version TLSv1.3 is above ssl_max_protocol_version TLSv1.2",
        ),
    ],
)
def test_bad_tls_parameters_are_refused_at_load_naming_the_parameter(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates, query: str, complaint: str
) -> None:
    query = query.format(
        folder=certificates.ca.parent,
        client_cert=certificates.client_cert,
        client_key=certificates.client_key,
        server_key=certificates.server_key,
    )
    assert complaint.format(folder=certificates.ca.parent) in load_error(
        monkeypatch, f"{BASE}?{query}"
    )


def test_the_key_password_is_never_shown(certificates: Certificates) -> None:
    settings = DatabaseSettings(
        url=f"{BASE}?sslmode=require&sslcert={certificates.client_cert}"
        f"&sslkey={certificates.client_key}&sslpassword={KEY_PASSWORD}"
    )
    assert dsn_query(settings)["sslpassword"] == KEY_PASSWORD
    for text in (repr(settings), str(settings), settings.safe_url):
        assert KEY_PASSWORD not in text


def test_a_bad_tls_parameter_and_another_problem_are_reported_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB__MAIN__POOL_SIZE", "many")
    message = load_error(monkeypatch, f"{BASE}?sslmode=verify-ca&sslrootcert=/no/such/ca.crt")
    assert "DB__MAIN__POOL_SIZE" in message
    assert "sslrootcert: no such file" in message


def test_replicas_inherit_the_primarys_tls_unless_they_set_their_own(
    monkeypatch: pytest.MonkeyPatch, certificates: Certificates
) -> None:
    monkeypatch.setenv("DB__MAIN__URL", f"{BASE}?sslmode=verify-full&sslrootcert={certificates.ca}")
    monkeypatch.setenv("DB__MAIN__REPLICAS", "postgresql://r1,postgresql://r2?sslmode=require")
    first, second = load_settings().databases["main"].replica_settings()
    assert dsn_query(first) == {"sslmode": "verify-full", "sslrootcert": str(certificates.ca)}
    assert dsn_query(second) == {"sslmode": "require"}


def test_a_replicas_own_tls_parameters_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB__MAIN__REPLICAS", "postgresql://r1?sslmode=verify-full")
    message = load_error(monkeypatch, BASE, variable="DB__MAIN__REPLICAS")
    assert "DB__MAIN__REPLICAS: replica 1: sslmode=verify-full needs sslrootcert" in message
