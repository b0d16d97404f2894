"""gRPC credentials from the mesh file's TLS blocks (mesh.config.ServerTLS / ClientTLS).

Certificates and keys are read once, when a server starts or a channel is made:
rotating them means restarting the process (docs/security.md). A file that cannot
be read is a TLSFileError naming the setting and the path, never a gRPC error later.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from mesh.config import ClientTLS, MeshConfigError, ServerTLS


class TLSFileError(MeshConfigError):
    """A certificate or key file named in the config cannot be read."""


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TLSFileError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if not data.strip():
        raise TLSFileError(f"{what}: {path} is empty")
    return data


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """TLS for a listener; with client_ca, a client without a certificate signed by it fails the handshake."""
    return grpc.ssl_server_credentials(
        [(_read(tls.key, "tls.key"), _read(tls.cert, "tls.cert"))],
        root_certificates=_read(tls.client_ca, "tls.client_ca"),
        require_client_auth=bool(tls.require_client_cert),
    )


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """TLS for a channel: trust `ca` (system roots when unset), present `cert` when set."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "ca"),
        private_key=_read(tls.key, "key"),
        certificate_chain=_read(tls.cert, "cert"),
    )


def channel_options(tls: ClientTLS | None) -> tuple:
    """Extra channel options for `tls`: the name to check the server's certificate against, when set."""
    if tls is not None and tls.server_name:
        return (("grpc.ssl_target_name_override", tls.server_name),)
    return ()


def open_channel(address: str, tls: ClientTLS | None, options=(), aio: bool = True):
    """A channel to `address`: TLS with `tls`, plaintext when it is None."""
    module = grpc.aio if aio else grpc
    if tls is None:
        return module.insecure_channel(address, options=list(options))
    return module.secure_channel(address, channel_credentials(tls), options=[*options, *channel_options(tls)])
