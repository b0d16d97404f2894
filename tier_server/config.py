"""Tier server configuration: CLI flags, with QARR_TIER_* environment variables as defaults.

Nested settings take dotted flags or `__` in the variable: `--tls.cert FILE` or QARR_TIER_TLS__CERT=FILE.

The engine settings are the mesh file's `serve` block (mesh.config.ServeConfig);
the launcher turns a tier's entry of the mesh file into these flags (`tier_argv`).
"""

from __future__ import annotations

import json

from pydantic import Field
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

from mesh.config import ServeConfig, TierSpec, split_address


class TierConfig(BaseSettings, ServeConfig):
    model_config = SettingsConfigDict(env_prefix="QARR_TIER_", cli_prog_name="qarr-tier", cli_kebab_case=True, extra="forbid",
                                      env_nested_delimiter="__")

    name: str = Field("default", description="tier name the router knows this server by")
    model: str = Field(".cache/models/smollm2-135m-instruct", description="model folder (or hub id where reachable)")
    quantization: str = Field(
        "bf16", description="label reported to callers (bf16, fp32, w8a8, w4a16, awq, fp8...)"
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(50061, description="port to listen on (0 = any free port)")
    max_model_len: int = Field(2048, gt=0, description="context length in tokens")


# Flags whose value is a JSON list. pydantic-settings' own CLI list parsing strips whitespace and doubles
# backslashes, so a stop string such as "\nQuestion:" could not get through it; these are read here.
JSON_LIST_FLAGS = {"--stop": "stop"}


def load_tier_config(argv: list[str]) -> TierConfig:
    """Parse `python -m tier_server` flags (`--stop '["\\nQuestion:"]'` is JSON) over QARR_TIER_* variables."""
    rest: list[str] = []
    lists: dict[str, list[str]] = {}
    args = iter(argv)
    for arg in args:
        field = JSON_LIST_FLAGS.get(arg)
        if field is None:
            rest.append(arg)
            continue
        value = next(args, "")
        try:
            lists[field] = json.loads(value)
        except ValueError:
            raise SystemExit(f"{arg} takes a JSON list of strings, e.g. {arg} '[\"\\nQuestion:\"]'; got {value!r}") from None
    return CliApp.run(TierConfig, cli_args=rest, **lists)


def tier_argv(spec: TierSpec, address: str | None = None, replica: int = 0) -> list[str]:
    """`python -m tier_server` flags for one replica of a tier of the mesh file: its identity, then every
    `serve` setting it sets. `address`: the replica's (default: the tier's first); `replica`: its index,
    added to a fixed metrics_port so replicas on one host do not collide."""
    host, port = split_address(address or spec.static_addresses[0])
    argv = ["--name", spec.name, "--model", spec.model, "--quantization", spec.quantization,
            "--host", host.strip("[]"), "--port", str(port), "--max-model-len", str(spec.max_model_len)]
    for key, value in spec.serve.model_dump(exclude_unset=True).items():
        if key in ("metrics_port", "health_port") and value:
            value += replica  # replicas on one host each need their own
        if isinstance(value, dict):  # a nested block (tls): --tls.cert FILE ...
            argv += [arg for sub, v in value.items() if v is not None for arg in (f"--{key}.{sub.replace('_', '-')}", str(v))]
        elif value is not None:
            argv += [f"--{key.replace('_', '-')}", json.dumps(value) if isinstance(value, list) else str(value)]
    return argv
