"""TLS material of a development service: a CA of its own and a server certificate it signed.

Made once per service directory with the system's `openssl` (Debian package `openssl`), kept
in DIR/tls/ (keys mode 600): `ca.pem` is what clients trust (OS_CACERT), `server.pem` and
`server.key` are what the servers present. The certificate names 127.0.0.1 and localhost
(subjectAltName: clients check the IP), and carries the key usages and key identifiers that
strict X.509 checks want.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from devtools import process
from devtools.errors import ServiceError

CA_DAYS = 3650
SERVER_DAYS = 825
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXT = """\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients trust
    cert: Path  # the server certificate
    key: Path  # its private key


def files(dir: Path) -> TlsFiles:
    tls = dir / "tls"
    return TlsFiles(tls / "ca.pem", tls / "server.pem", tls / "server.key")


def ensure(dir: Path) -> TlsFiles:
    """DIR's CA and server certificate, made on first use."""
    out = files(dir)
    if out.ca.exists() and out.cert.exists() and out.key.exists():
        return out
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceError("openssl is not installed (--tls needs it): apt-get install openssl")
    tls = out.ca.parent
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key, csr, ext = tls / "ca.key", tls / "server.csr", tls / "server.ext"
    process.run([openssl, "req", "-x509", *_CURVE, "-keyout", ca_key, "-out", out.ca,
                 "-days", str(CA_DAYS), "-subj", "/CN=cloudfs dev CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    process.run([openssl, "req", *_CURVE, "-keyout", out.key, "-out", csr,
                 "-subj", "/CN=127.0.0.1"])
    ext.write_text(_SERVER_EXT)
    process.run([openssl, "x509", "-req", "-in", csr, "-CA", out.ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-out", out.cert, "-days", str(SERVER_DAYS),
                 "-extfile", ext])
    for key in (ca_key, out.key):
        key.chmod(0o600)
    csr.unlink()
    return out
