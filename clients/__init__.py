"""QARR Python SDK: `Client` / `AsyncClient`, typed chunks, one error tree, a resumable batch runner."""

from clients.batch import BadLine, Batch, BatchItem, BatchSummary, arun_batch, read_items, run_batch
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
from clients.types import Chunk, Completion, Tier, TierList, Usage

__all__ = [
    "AsyncClient",
    "BadLine",
    "Batch",
    "BatchItem",
    "BatchSummary",
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
    "TierList",
    "Unauthenticated",
    "Unavailable",
    "Usage",
    "arun_batch",
    "read_items",
    "run_batch",
]
