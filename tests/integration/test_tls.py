"""TLS through asyncdal against real servers: one with ``ssl=on`` and a CA the test makes,
and one without TLS.

The TLS server's certificate is issued by the test CA for ``localhost`` only, so
``verify-full`` to ``127.0.0.1`` must fail its host-name check; ``certuser`` may log in only
with a client certificate (``hostssl ... cert``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from asyncdal import ConfigurationError, DatabaseSettings, create_engine, load_settings
from asyncdal.testing import ThrowawayCluster, throwaway_cluster
from tests.certificates import Certificates, make_certificates

HBA = """\
local all all trust
hostnossl all certuser 127.0.0.1/32 reject
hostssl all certuser 127.0.0.1/32 cert
host all all 127.0.0.1/32 trust
"""


@dataclass(frozen=True)
class TlsServer:
    port: int
    certificates: Certificates

    def url(self, query: str, *, host: str = "localhost", user: str = "postgres") -> str:
        return f"postgresql://{user}@{host}:{self.port}/postgres?{query}"


async def enable_tls(cluster: ThrowawayCluster, certificates: Certificates) -> None:
    """Turn TLS on with the test CA's server certificate, trust the CA for client
    certificates, and write the ``pg_hba.conf`` above; then restart."""
    connection = await asyncpg.connect(cluster.url)
    try:
        data = Path(await connection.fetchval("SHOW data_directory"))
        hba = Path(await connection.fetchval("SHOW hba_file"))
        owner = data.stat()
        for source, name in (
            (certificates.server_cert, "server.crt"),
            (certificates.server_key, "server.key"),
            (certificates.ca, "ca.crt"),
        ):
            shutil.copyfile(source, data / name)
            # The server runs as the data folder's owner and refuses a key others may read.
            os.chown(data / name, owner.st_uid, owner.st_gid)
            (data / name).chmod(0o600)
        for setting, value in (
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
            ("ssl_ca_file", "ca.crt"),
        ):
            await connection.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
        await connection.execute(f"CREATE ROLE {certificates.client_user} LOGIN")
    finally:
        await connection.close()
    hba.write_text(HBA)
    cluster.restart()


@pytest.fixture(scope="module")
async def tls_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsServer]:
    folder = tmp_path_factory.mktemp("tls")
    certificates = make_certificates(folder / "certificates")
    with throwaway_cluster() as cluster:
        await enable_tls(cluster, certificates)
        yield TlsServer(cluster.port, certificates)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[ThrowawayCluster]:
    """A server without TLS (``ssl`` is off in a new cluster)."""
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def empty_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty home folder: no ``~/.postgresql/root.crt`` or client certificate of the
    machine's takes part, and no ``PGSSL*`` variable."""
    for name in list(os.environ):
        if name.upper().startswith("PGSSL"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


async def session_of(url: str) -> tuple[bool, str]:
    """Connect through asyncdal: whether the session uses TLS, and as whom."""
    engine = create_engine(
        DatabaseSettings(url=url, pool="null", retry_attempts=1, connect_timeout=5)
    )
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT ssl, current_user AS role FROM pg_stat_ssl"
                        " WHERE pid = pg_backend_pid()"
                    )
                )
            ).one()
            return bool(row.ssl), str(row.role)
    finally:
        await engine.dispose()


async def refusal_of(url: str) -> str:
    """Connect through asyncdal, which must fail: the whole chain of errors, as text."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the chain is checked below
        await session_of(url)
    chain: list[str] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(chain)


async def test_require_uses_tls(tls_server: TlsServer) -> None:
    assert await session_of(tls_server.url("sslmode=require")) == (True, "postgres")


async def test_disable_does_not(tls_server: TlsServer) -> None:
    assert await session_of(tls_server.url("sslmode=disable")) == (False, "postgres")


async def test_prefer_uses_tls_where_the_server_offers_it(tls_server: TlsServer) -> None:
    assert await session_of(tls_server.url("sslmode=prefer")) == (True, "postgres")


async def test_verify_ca_trusts_the_right_ca_only(tls_server: TlsServer) -> None:
    certificates = tls_server.certificates
    # verify-ca checks the issuer, not the name: 127.0.0.1 is fine.
    right = tls_server.url(f"sslmode=verify-ca&sslrootcert={certificates.ca}", host="127.0.0.1")
    assert await session_of(right) == (True, "postgres")
    wrong = tls_server.url(f"sslmode=verify-ca&sslrootcert={certificates.other_ca}")
    assert "certificate verify failed" in await refusal_of(wrong)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
async def test_a_verify_mode_needs_a_root_certificate(
    tls_server: TlsServer, empty_home: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    certificates = tls_server.certificates
    # With client certificates but no CA this used to connect without verifying anything.
    url = tls_server.url(
        f"sslmode={mode}&sslcert={certificates.client_cert}&sslkey={certificates.client_key}"
    )
    with pytest.raises(ValueError, match=f"sslmode={mode} needs sslrootcert"):
        DatabaseSettings(url=url)
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigurationError, match=r"DB__MAIN__URL.*needs sslrootcert"):
        load_settings()
    # libpq's default root certificate, as asyncpg reads it.
    (empty_home / ".postgresql").mkdir()
    shutil.copyfile(certificates.ca, empty_home / ".postgresql" / "root.crt")
    assert await session_of(tls_server.url(f"sslmode={mode}")) == (True, "postgres")


async def test_verify_full_checks_the_host_name(tls_server: TlsServer) -> None:
    query = f"sslmode=verify-full&sslrootcert={tls_server.certificates.ca}"
    assert await session_of(tls_server.url(query, host="localhost")) == (True, "postgres")
    # The certificate is for localhost, not for 127.0.0.1.
    refusal = await refusal_of(tls_server.url(query, host="127.0.0.1"))
    assert "certificate verify failed" in refusal
    assert "127.0.0.1" in refusal


async def test_require_verifies_the_server_when_a_root_certificate_is_there(
    tls_server: TlsServer,
) -> None:
    # libpq's rule: with a root certificate, require verifies the issuer like verify-ca.
    url = tls_server.url(f"sslmode=require&sslrootcert={tls_server.certificates.other_ca}")
    assert "certificate verify failed" in await refusal_of(url)


async def test_client_certificate_authentication(tls_server: TlsServer) -> None:
    certificates = tls_server.certificates
    client = f"sslcert={certificates.client_cert}&sslkey={certificates.client_key}"
    query = f"sslmode=verify-full&sslrootcert={certificates.ca}&{client}"
    assert await session_of(tls_server.url(query, user="certuser")) == (True, "certuser")
    # Without the certificate the server refuses the role.
    without = tls_server.url(f"sslmode=require&sslrootcert={certificates.ca}", user="certuser")
    assert "requires a valid client certificate" in await refusal_of(without)


@pytest.mark.parametrize("mode", ["prefer", "allow"])
async def test_prefer_and_allow_fall_back_to_plain_even_with_client_certificates(
    tls_server: TlsServer, plain_server: ThrowawayCluster, mode: str
) -> None:
    certificates = tls_server.certificates
    # Client certificates used to force TLS on, so a server without TLS was refused.
    query = f"sslmode={mode}&sslcert={certificates.client_cert}&sslkey={certificates.client_key}"
    assert await session_of(f"{plain_server.url}?{query}") == (False, "postgres")


async def test_a_replica_without_tls_parameters_connects_like_its_primary(
    tls_server: TlsServer,
) -> None:
    query = f"sslmode=verify-full&sslrootcert={tls_server.certificates.ca}"
    primary = DatabaseSettings(
        url=tls_server.url(query),
        replicas=(f"postgresql://localhost:{tls_server.port}",),
    )
    [replica] = primary.replica_settings()
    assert replica.tls_arguments() == primary.tls_arguments()
    engine = create_engine(replica)
    try:
        async with engine.connect() as connection:
            in_tls = await connection.scalar(
                text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
    finally:
        await engine.dispose()
    assert in_tls is True
