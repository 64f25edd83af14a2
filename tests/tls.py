"""A private CA and a server certificate for 127.0.0.1, made with the openssl command-line tool:
the setup of a fleet whose backend's certificate is signed by an in-house CA (issue 17)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
# What a verifying client (Python's ssl, VERIFY_X509_STRICT since 3.13) expects of a server
# certificate: the address in subjectAltName, not a CA, key identifiers present.
SERVER_EXTENSIONS = """\
subjectAltName={names}
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
"""


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA's certificate: what --ca-file is given
    cert: Path  # the server's certificate, signed by the CA
    key: Path  # the server's private key


def make_certs(directory: Path, names: str = "IP:127.0.0.1,DNS:localhost") -> Certs:
    """`names`: the server certificate's subjectAltName."""
    openssl = shutil.which("openssl")
    require(openssl is not None, "no openssl command: apt-get install openssl")
    assert openssl is not None
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run(
        "req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=splitwatch test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", *EC_KEY, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(SERVER_EXTENSIONS.format(names=names))
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
