"""The Python examples in docs/http.md and the README run as written against a router's HTTP door (only the port
differs)."""

from __future__ import annotations

import asyncio
import re
import sys

from tests.harness import REPO, subprocess_env

DOC = (REPO / "docs" / "http.md").read_text()
README = (REPO / "README.md").read_text()


async def run(code: str, base_url: str) -> str:
    assert "http://127.0.0.1:8000/v1" in code
    code = code.replace("http://127.0.0.1:8000/v1", f"{base_url}/v1")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=subprocess_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_docs_python_example_streams_and_prints_usage(mesh):
    """The readme:http-python block streams the fake tier's words, then prints the usage line with the tier."""
    match = re.search(r"<!-- readme:http-python -->\n```python\n(.*?)```", DOC, re.S)
    assert match, "no readme:http-python block in docs/http.md"
    text = await run(match.group(1), mesh.base_url)
    assert text.startswith("alpha bravo charlie") and re.search(r"\n32 tokens from (a|b) \(\w+\)\n$", text), text


async def test_readme_python_example_streams(mesh):
    """The README's OpenAI-compatible example streams the answer."""
    section = README.split("## The OpenAI-compatible endpoint", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    text = await run(code, mesh.base_url)
    assert text.startswith("alpha bravo charlie delta"), text
