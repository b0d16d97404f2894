"""Session fixtures: the bundled model, one real vLLM CPU tier, and the no-orphans check (helpers:
tests/harness.py, tests/process_tree.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.process import OWNER_ENV
from tests.harness import MODEL_DIR, start_tier_process
from tests.process_tree import started_by, wait_until_none

# Every process this session starts (and theirs: vLLM's engine processes) inherits the marker,
# whether it was started through launcher/process.py or not.
os.environ[OWNER_ENV] = str(os.getpid())


def pytest_configure(config: pytest.Config) -> None:
    """A suite started as a background job of a non-interactive shell (`make test &`, as a CI runner may)
    inherits SIGINT ignored, and exec passes an ignored signal on: a program these tests Ctrl-C (`qarr
    batch`) would then never see it. With SIGINT's usual handler here, the children start with the default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_session() -> Iterator[None]:
    """At the end of the session no tier server, router, launcher or VLLM::EngineCore/Worker that this
    session started is still running; any that is fails the session (and is killed)."""
    yield
    left, _ = wait_until_none(lambda: started_by(os.getpid()), timeout=5)
    if left:
        for p in left:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail("processes started by this test session outlived it:\n  " + "\n  ".join(map(str, left)))


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The bundled SmolLM2 folder, converted once (about 20 s the first time)."""
    from tier_server.prepare import prepare

    return prepare(MODEL_DIR)


@pytest.fixture(scope="session")
def real_tier(bundled_model: Path, tmp_path_factory) -> Iterator[str]:
    """One real vLLM CPU tier (bf16, bundled model) for the whole session; yields its address."""
    log = tmp_path_factory.mktemp("tier") / "bf16.log"
    tier = start_tier_process(
        "bf16", "--model", str(bundled_model), "--dtype", "bfloat16", "--quantization", "bf16",
        "--max-model-len", "1024", "--kv-cache-gib", "0.25", "--grace-seconds", "2", log=log,
    )
    try:
        tier.wait_serving(timeout=300)
    except Exception as e:
        raise RuntimeError(f"real tier did not start: {e}") from None
    yield tier.address
    tier.stop()
