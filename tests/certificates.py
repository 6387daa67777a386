"""Certificates for TLS tests: a test CA, another CA, a server certificate and a client one.

Made with ``trustme`` in a folder of the test's own, so no test depends on the machine's
certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["Certificates", "make_certificates"]


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files :func:`make_certificates` wrote.

    Attributes:
        ca: the test CA's certificate (what ``sslrootcert`` names to trust the server).
        other_ca: an unrelated CA's certificate, which must not be trusted for the server.
        server_cert: the server's certificate, issued by ``ca`` for ``localhost`` only (so a
            connection to ``127.0.0.1`` fails the host-name check of ``verify-full``).
        server_key: its private key.
        client_cert: a client certificate issued by ``ca`` whose CN is ``client_user``.
        client_key: its private key.
        client_user: the role the client certificate is for.
    """

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_user: str


def make_certificates(folder: Path, client_user: str = "certuser") -> Certificates:
    """Write a test CA, another CA, and server and client certificates into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    server = authority.issue_cert("localhost")
    # PostgreSQL's cert authentication matches the certificate's CN to the role.
    client = authority.issue_cert(client_user, common_name=client_user)
    files = Certificates(
        ca=folder / "ca.crt",
        other_ca=folder / "other-ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        client_user=client_user,
    )
    authority.cert_pem.write_to_path(str(files.ca))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    for key in (files.server_key, files.client_key):
        # libpq and PostgreSQL refuse private keys that others may read.
        key.chmod(0o600)
    return files
