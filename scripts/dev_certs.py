"""Throwaway certificates and tokens for a TLS mesh on one machine (tests, trying it out; not production).

    .venv/bin/python scripts/dev_certs.py certs/            # needs the `cryptography` package (the dev extra)

writes into certs/ (keys 0600):

    ca.pem                         signs the servers' certificates: callers and the router trust it
    router.pem, router.key         the router's listener (names: localhost, 127.0.0.1 and --host values)
    tier.pem, tier.key             every tier's listener (same names)
    router-ca.pem                  the tiers' client_ca: it signs one certificate, the router's ...
    router-client.pem, .key        ... which the router presents to tiers (mutual TLS): nobody else can call a tier
    client-ca.pem                  the router's client_ca when callers must present certificates too
    client.pem, client.key         a caller's certificate signed by it
    tokens                         `caller:token` lines, one random token per --caller (default: alice, bob): the router's
    alice.token, bob.token         each caller's token alone, for `qarr --token-file`

Separate CAs matter: a tier trusts only certificates that router-ca signed, so a caller's own certificate
(client-ca) does not open the tiers. docs/security.md shows the mesh file that uses these.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")


class Authority:
    """A self-signed CA that issues leaf certificates."""

    def __init__(self, name: str, days: int = 365) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.days = days
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common_name: str, hosts: tuple[str, ...] = (), *, server: bool = False, client: bool = False):
        """(certificate, key) for a server (names in `hosts`), a client, or both."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])).issuer_name(self.name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if hosts:
            names = []
            for h in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    names.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, secret: bool = False) -> Path:
    path.write_bytes(data)
    if secret:
        os.chmod(path, 0o600)
    return path


def _write_pair(out: Path, stem: str, cert, key) -> None:
    _write(out / f"{stem}.pem", _pem(cert))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(out / f"{stem}.key", key_pem, secret=True)


def make_pki(out: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS, callers: tuple[str, ...] = ("alice", "bob"),
             days: int = 365) -> dict[str, str]:
    """Write the files above into `out`; returns {caller: token}."""
    out.mkdir(parents=True, exist_ok=True)
    servers, router_ca, client_ca = Authority("qarr dev server CA", days), Authority("qarr dev router CA", days), Authority("qarr dev client CA", days)
    _write(out / "ca.pem", _pem(servers.cert))
    _write(out / "router-ca.pem", _pem(router_ca.cert))
    _write(out / "client-ca.pem", _pem(client_ca.cert))
    _write_pair(out, "router", *servers.issue("qarr-router", hosts, server=True))
    _write_pair(out, "tier", *servers.issue("qarr-tier", hosts, server=True))
    _write_pair(out, "router-client", *router_ca.issue("qarr-router", client=True))
    _write_pair(out, "client", *client_ca.issue("qarr-client", client=True))
    tokens = {name: secrets.token_urlsafe(32) for name in callers}
    _write(out / "tokens", "".join(f"{name}:{token}\n" for name, token in tokens.items()).encode(), secret=True)
    for name, token in tokens.items():
        _write(out / f"{name}.token", f"{token}\n".encode(), secret=True)
    return tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev_certs.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write into (created)")
    parser.add_argument("--host", action="append", default=[], help="another name or IP the servers answer on (repeatable)")
    parser.add_argument("--caller", action="append", default=[], help="a caller to make a token for (repeatable; default alice, bob)")
    parser.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    args = parser.parse_args(argv)
    make_pki(args.out, (*DEFAULT_HOSTS, *args.host), tuple(args.caller) or ("alice", "bob"), args.days)
    print(f"wrote CA, certificates, keys and tokens to {args.out}/ (keys and tokens are 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
