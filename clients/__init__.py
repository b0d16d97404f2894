"""QARR Python SDK: `Client` / `AsyncClient`, typed chunks, one error tree."""

from clients.client import AsyncClient, Client
from clients.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidRequest,
    QarrError,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from clients.types import Chunk, Completion, Tier, Usage

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Chunk",
    "Client",
    "Completion",
    "DeadlineExceeded",
    "InvalidRequest",
    "QarrError",
    "ResourceExhausted",
    "ServerError",
    "Tier",
    "Unauthenticated",
    "Unavailable",
    "Usage",
]
