"""Bearer tokens on the router: who is calling, checked in constant time, for every door.

    verifier = TokenVerifier.from_config(config.auth)   # reads the tokens file / variable once, at start
    verifier.caller("Bearer 9f8e...")                    # "alice"; None for a missing, malformed or wrong token
    grpc.aio.server(interceptors=[TokenInterceptor(verifier)])   # gRPC: every method but health needs one
    current_caller()                                     # inside a gRPC handler: the caller admitted

The HTTP door calls `verifier.caller(headers.get("authorization"))` and passes the
name on in `router.core.Call(caller=...)`, where the per-caller stream limit applies.

Tokens are kept only as SHA-256 digests and compared to every known digest with
`hmac.compare_digest` (no early exit), so neither the time a check takes nor an
error tells which part of a guess was right. Nothing here logs or repeats a token:
a refusal says only "missing or invalid bearer token".
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import grpc

from mesh.config import AuthConfig, MeshConfigError
from mesh.status import abort

log = logging.getLogger("qarr.router")

# grpc.health.v1 stays open: load balancers and orchestrators probe without credentials.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
REFUSAL = "missing or invalid bearer token"
MIN_TOKEN_CHARS = 16
_CALLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN = re.compile(r"^[\x21-\x2b\x2d-\x7e]+$")  # visible ASCII but the comma: fits a header and the env format
_caller: contextvars.ContextVar[str] = contextvars.ContextVar("qarr_caller", default="")


class TokenFileError(MeshConfigError):
    """The tokens file or variable is missing or malformed; the message never quotes a token."""


def parse_tokens(text: str, source: str) -> list[tuple[str, str]]:
    """`caller:token` entries (lines, or commas in an environment variable) -> [(caller, token)]. A caller
    may have several tokens (to rotate one without a gap); they share the caller's stream limit."""
    tokens: list[tuple[str, str]] = []
    for number, entry in enumerate(re.split(r"[\n,]", text), 1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{source}: entry {number}"
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not _CALLER_NAME.match(name):
            raise TokenFileError(f"{where}: expected `caller:token` with a caller name of letters, digits, . _ -")
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
            raise TokenFileError(f"{where} ({name}): the token must be at least {MIN_TOKEN_CHARS} visible ASCII characters, no comma")
        if any(token == known for _, known in tokens):
            raise TokenFileError(f"{where} ({name}): this token appears twice")
        tokens.append((name, token))
    return tokens


def bearer(authorization: str | None) -> str | None:
    """The token of an `authorization: Bearer TOKEN` value (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenVerifier:
    """Known tokens (as digests) and the caller each names."""

    def __init__(self, tokens: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """`tokens`: {caller: token} or (caller, token) pairs."""
        pairs = list(tokens.items() if isinstance(tokens, Mapping) else tokens)
        if not pairs:
            raise TokenFileError("auth is on but no token is configured")
        self._entries = tuple((_digest(token), caller) for caller, token in pairs)
        self.callers = tuple(dict.fromkeys(caller for caller, _ in pairs))

    def __repr__(self) -> str:  # never the tokens
        return f"TokenVerifier(callers={list(self.callers)})"

    @classmethod
    def from_config(cls, auth: AuthConfig, environ: Mapping[str, str] = os.environ) -> TokenVerifier:
        tokens: list[tuple[str, str]] = []
        sources: list[tuple[str, str]] = []
        if auth.tokens_file:
            try:
                sources.append((Path(auth.tokens_file).read_text(), f"auth.tokens_file {auth.tokens_file}"))
            except (OSError, UnicodeDecodeError) as e:
                raise TokenFileError(f"auth.tokens_file: cannot read {auth.tokens_file}: {getattr(e, 'strerror', None) or e}") from None
        if auth.tokens_env:
            if auth.tokens_env not in environ:
                raise TokenFileError(f"auth.tokens_env: the environment variable {auth.tokens_env} is not set")
            sources.append((environ[auth.tokens_env], f"auth.tokens_env ${auth.tokens_env}"))
        for text, source in sources:
            for name, token in parse_tokens(text, source):
                if any(token == known for _, known in tokens):
                    raise TokenFileError(f"{source} ({name}): this token is also in another source")
                tokens.append((name, token))
        return cls(tokens)

    def caller(self, authorization: str | None) -> str | None:
        """The caller an `authorization` value (`Bearer TOKEN`) names, or None."""
        token = bearer(authorization)
        if token is None:
            return None
        presented = _digest(token)
        found = None
        for digest, name in self._entries:  # every entry, match or not: the time does not depend on which
            if hmac.compare_digest(digest, presented):
                found = name
        return found


def _authorization(metadata: Sequence | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def current_caller() -> str:
    """Inside a gRPC handler: the caller TokenInterceptor admitted ("" when auth is off)."""
    return _caller.get()


async def _refuse(request_or_iterator, context: grpc.aio.ServicerContext) -> None:
    await abort(context, grpc.StatusCode.UNAUTHENTICATED, REFUSAL, "UNAUTHENTICATED")


def _refusal_like(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` (unknown methods too) that refuses at once."""
    if handler is None or not (handler.request_streaming or handler.response_streaming):
        return grpc.unary_unary_rpc_method_handler(_refuse)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse)
    return grpc.unary_stream_rpc_method_handler(_refuse)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Every call but `open_methods` needs a known bearer token, streaming ones included; a missing or
    wrong one ends the call UNAUTHENTICATED before its handler runs. The admitted caller's name is
    left for the handler (`current_caller()`: the interceptor runs in the call's own task)."""

    def __init__(self, verifier: TokenVerifier, open_methods: frozenset[str] = OPEN_METHODS) -> None:
        self.verifier = verifier
        self.open_methods = open_methods

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method in self.open_methods:
            return await continuation(details)
        caller = self.verifier.caller(_authorization(details.invocation_metadata))
        if caller is None:
            log.info("refused a call to %s: %s", details.method[:128], REFUSAL)
            return _refusal_like(await continuation(details))
        _caller.set(caller)
        return await continuation(details)
