"""Session fixtures: the bundled model and one real vLLM CPU tier (helpers: tests/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import MODEL_DIR, start_tier_process, stop_process, wait_serving


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The bundled SmolLM2 folder, converted once (about 20 s the first time)."""
    from tier_server.prepare import prepare

    return prepare(MODEL_DIR)


@pytest.fixture(scope="session")
def real_tier(bundled_model: Path, tmp_path_factory) -> Iterator[str]:
    """One real vLLM CPU tier (bf16, bundled model) for the whole session; yields its address."""
    log = tmp_path_factory.mktemp("tier") / "bf16.log"
    proc, address = start_tier_process(
        "bf16", "--model", str(bundled_model), "--dtype", "bfloat16", "--quantization", "bf16",
        "--max-model-len", "1024", "--kv-cache-gib", "0.25", "--grace-seconds", "2", log=log,
    )
    try:
        wait_serving(address, proc, timeout=300)
    except Exception:
        stop_process(proc)
        raise RuntimeError(f"real tier did not start; log:\n{log.read_text()[-4000:]}") from None
    yield address
    stop_process(proc)
