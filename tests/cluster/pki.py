"""Certificates for the test control plane, made with the ``openssl`` command line.

One CA signs the API server's serving certificate and a client certificate per
identity; a separate key pair signs ServiceAccount tokens. EC P-256 keys keep
generation to a few milliseconds each.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DAYS = "30"


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of every file the control plane and its clients need."""

    ca_cert: Path
    ca_key: Path
    serving: ClientCert
    sa_private_key: Path
    sa_public_key: Path
    clients: dict[str, ClientCert]


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)


def _signed_cert(
    directory: Path, name: str, subject: str, ca: ClientCert, extensions: list[str]
) -> ClientCert:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _new_key(key)
    args = [
        "req",
        "-new",
        "-x509",
        "-key",
        str(key),
        "-out",
        str(cert),
        "-days",
        _DAYS,
        "-subj",
        subject,
    ]
    args += ["-CA", str(ca.cert), "-CAkey", str(ca.key)]
    for extension in ["basicConstraints=critical,CA:FALSE", *extensions]:
        args += ["-addext", extension]
    _openssl(*args)
    return ClientCert(cert=cert, key=key)


def create_pki(
    directory: Path, client_subjects: dict[str, str], extra_ips: list[str] | None = None
) -> ClusterPKI:
    """Create a CA, a serving certificate for 127.0.0.1 (and ``extra_ips``), and one client
    cert per subject.

    ``client_subjects`` maps a file name to an openssl subject such as
    ``/O=system:masters/CN=retune-admin`` (O is the group, CN the user name).
    """
    if shutil.which("openssl") is None:
        raise RuntimeError(
            "the openssl command is needed to create test certificates (apt-get install openssl)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    ca = ClientCert(cert=directory / "ca.crt", key=directory / "ca.key")
    _new_key(ca.key)
    _openssl(
        "req", "-new", "-x509", "-key", str(ca.key), "-out", str(ca.cert), "-days", _DAYS,
        "-subj", "/CN=retune-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"]  # fmt: skip
    ips = ["127.0.0.1", "10.0.0.1", *(extra_ips or [])]
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
    serving = _signed_cert(
        directory, "apiserver", "/CN=kube-apiserver", ca,
        [f"subjectAltName={san}", "keyUsage=critical,digitalSignature,keyEncipherment",
         "extendedKeyUsage=serverAuth"],
    )  # fmt: skip
    client_usage = [
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=clientAuth",
    ]
    clients = {
        name: _signed_cert(directory, name, subject, ca, client_usage)
        for name, subject in client_subjects.items()
    }
    sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
    _new_key(sa_private)
    _openssl("pkey", "-in", str(sa_private), "-pubout", "-out", str(sa_public))
    return ClusterPKI(
        ca_cert=ca.cert,
        ca_key=ca.key,
        serving=serving,
        sa_private_key=sa_private,
        sa_public_key=sa_public,
        clients=clients,
    )


def kubeconfig(server: str, ca: Path, user: dict[str, str]) -> dict[str, Any]:
    """A kubeconfig document for one identity (``user``: client certificate and key, or a
    token) against the test API server."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "retune-test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {"name": "retune-test", "context": {"cluster": "retune-test", "user": "user"}}
        ],
        "current-context": "retune-test",
    }
