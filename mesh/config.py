"""The mesh description: one typed file (mesh.yaml) for the router's settings and every tier.

    listen: 127.0.0.1:50051            # router
    profiles: profiles/default.yaml
    policy: {...}  breaker: {...}  retry: {...}  observability: {...}
    tls: {...}  upstream_tls: {...}  auth: {...}   # security, off unless set (docs/security.md)
    tiers:
      - name: bf16                     # what the router knows about the tier
        address: 127.0.0.1:50061       # one replica; or addresses: [a:p, b:p]; or dns: name:port
        model: .cache/models/smollm2-135m-instruct
        quantization: bf16
        max_model_len: 2048
        serve: {dtype: bfloat16, kv_cache_gib: 0.5}   # the tier server's own settings (ServeConfig)

Read by `load_mesh` only: the router, the launcher, the profiler, the benchmarks
and the tests all call it. Every block forbids unknown fields, so a typo fails
at start with the file and the field's path in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mesh.observability import ObservabilityConfig

# The tier's default when a request sets no max_tokens: min(DEFAULT_MAX_TOKENS, room left in the
# context). Router and tier both use `default_max_tokens`, so they agree on what fits.
DEFAULT_MAX_TOKENS = 256


def default_max_tokens(prompt_tokens: int, max_model_len: int) -> int:
    """max_tokens for a request that set none: 256, or the room the prompt leaves (0: it does not fit)."""
    return max(0, min(DEFAULT_MAX_TOKENS, max_model_len - prompt_tokens))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerTLS(Strict):
    """TLS on a listener (the router's, or a tier's): PEM files, read at start (rotate by restarting)."""

    cert: str = Field(min_length=1, description="PEM certificate chain this server presents")
    key: str = Field(min_length=1, description="PEM private key of that certificate")
    client_ca: str | None = Field(None, description="PEM CA bundle that signs accepted client certificates (mutual TLS)")
    require_client_cert: bool | None = Field(
        None, description="mutual TLS: refuse clients without a certificate signed by client_ca (default: true when client_ca is set)"
    )

    @model_validator(mode="after")
    def _client_auth(self) -> ServerTLS:
        if self.require_client_cert is None:
            self.require_client_cert = self.client_ca is not None
        if self.require_client_cert and not self.client_ca:
            raise ValueError("require_client_cert needs client_ca (the CA that signs the client certificates)")
        if self.client_ca and not self.require_client_cert:
            raise ValueError("client_ca is only used with require_client_cert: true (gRPC does not check optional client certificates)")
        return self


class ClientTLS(Strict):
    """TLS on the router's connections to its tiers: the CA that signed the tiers' certificates and,
    for tiers that require one (mutual TLS), the router's own client certificate."""

    ca: str | None = Field(None, description="PEM CA bundle that signs the tiers' certificates (unset: the system's roots)")
    cert: str | None = Field(None, description="PEM client certificate chain the router presents to tiers")
    key: str | None = Field(None, description="PEM private key of that certificate")
    server_name: str | None = Field(None, description="name to check the tiers' certificates against instead of the address's host")

    @model_validator(mode="after")
    def _pair(self) -> ClientTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (the router's client certificate and its private key)")
        return self


class AuthConfig(Strict):
    """Bearer tokens the router accepts, each naming its caller. Read at start from a file and/or an
    environment variable (never from the command line); the values never appear in logs.

    Format of both: one `caller:token` per line (the variable may also separate them with commas);
    blank lines and lines starting with # are skipped. Every call but grpc.health.v1 needs a token."""

    tokens_file: str | None = Field(None, description="file of `caller:token` lines (a Kubernetes Secret mounted as a file)")
    tokens_env: str | None = Field(None, description="name of an environment variable holding `caller:token` entries")
    allow_plaintext_tiers: bool = Field(
        False, description="true: the router reaches tiers without a client certificate; only where something else "
        "(a network policy, a private network) keeps everyone but the router away from the tiers"
    )

    @model_validator(mode="after")
    def _some_source(self) -> AuthConfig:
        if not self.tokens_file and not self.tokens_env:
            raise ValueError("auth needs tokens_file or tokens_env")
        return self


class ServeConfig(Strict):
    """How a tier server runs its engine: the `serve` block of a tier, and the tier server's own flags."""

    engine: Literal["vllm", "fake"] = Field("vllm", description="vllm, or fake for tests and benchmarks")
    dtype: str = Field("auto", description="vLLM dtype: auto, bfloat16, float16, float32")
    vllm_quantization: str | None = Field(None, description="vLLM quantization method, when not in the checkpoint")
    kv_cache_gib: float = Field(0.5, gt=0, description="KV-cache size in GiB (bounded, always)")
    max_num_seqs: int = Field(64, gt=0, description="most sequences the engine batches at once")
    cpu_cores: str | None = Field(
        None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$",
        description="vLLM CPU build: the cores this tier's engine threads run on, e.g. '0-3' or '0,2' (unset: not "
                    "bound); tiers sharing one CPU each get their own cores instead of contending for all",
    )
    grace_seconds: float = Field(10.0, ge=0, description="on SIGTERM, how long in-flight streams may finish")
    drain_notice_seconds: float = Field(
        1.0, ge=0, description="on SIGTERM, how long health says NOT_SERVING before new calls are refused"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a TTY, JSON otherwise")
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")
    metrics_port: int | None = Field(None, ge=0, description="port of /metrics (0 = any free port; unset = off)")
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC trace collector, e.g. http://127.0.0.1:4317 (unset = off)")
    fake_token_delay_ms: float = Field(0.0, ge=0, description="fake engine: delay per token")
    fake_engine_process: bool = Field(
        False, description="fake engine: run a stand-in engine process; when it dies the engine is dead (like vLLM's EngineCore)"
    )
    # How prompts are framed (tier_server/prompting.py): for base and fine-tuned models.
    prompt_template: str | None = Field(
        None, description="frames raw prompts, and chat messages when the model has no chat template; holds {prompt}"
    )
    stop: list[str] = Field(default_factory=list, description="stop strings added to every request's own")
    # Request bounds; unset: the defaults of tier_server/limits.py (Limits), which also holds the fixed ones.
    max_request_bytes: int | None = Field(None, gt=0, description="largest request message gRPC accepts (4 MiB)")
    max_prompt_bytes: int | None = Field(None, gt=0, description="largest prompt in UTF-8 bytes (64 per token of max_model_len)")
    max_messages: int | None = Field(None, gt=0, description="most chat messages in one request (256)")

    @field_validator("prompt_template")
    @classmethod
    def _has_placeholder(cls, template: str | None) -> str | None:
        if template is not None and "{prompt}" not in template:
            raise ValueError("prompt_template must contain {prompt}")
        return template

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stop: list[str]) -> list[str]:
        if any(not s for s in stop):
            raise ValueError("stop strings must not be empty")
        return stop
    tls: ServerTLS | None = Field(
        None, description="TLS on the tier's listener (unset: plaintext); with client_ca, only clients holding a "
        "certificate signed by it (the router) may call"
    )
    reflection: bool = Field(True, description="serve gRPC server reflection")
    health_port: int | None = Field(
        None, ge=0, description="also serve grpc.health.v1 alone, plaintext, on this port (for probes that cannot do TLS)"
    )


def split_address(address: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"; ValueError naming what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host, int(port)


class TierSpec(Strict):
    """One tier: where its replicas listen, what it serves, and how its servers run (`serve`).

    Replicas are given one of three ways: `address` (one), `addresses` (several), or `dns`
    (a name:port resolved every `dns_interval_s`, e.g. a Kubernetes headless Service: every
    address it resolves to is a replica, and replicas come and go with it).
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    address: str = ""
    addresses: list[str] = Field(default_factory=list)
    dns: str = ""
    dns_interval_s: float = Field(5.0, gt=0)
    model: str = ""
    quantization: str = ""
    max_model_len: int = Field(2048, gt=0)
    # Price per million tokens (prompt + completion) for the cost metric; unset: the profile's, else none.
    cost_per_million_tokens: float | None = Field(None, ge=0)
    # tokenizer.json for the context-length check; default: <model>/tokenizer.json when it exists.
    tokenizer: str = ""
    # Streams this router keeps open to each replica of the tier at most; beyond it the replica is skipped.
    max_in_flight: int = Field(256, gt=0)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @field_validator("address", "dns")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            split_address(value)
        return value

    @field_validator("addresses")
    @classmethod
    def _distinct_host_ports(cls, addresses: list[str]) -> list[str]:
        for a in addresses:
            split_address(a)
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"addresses must be distinct, got {addresses}")
        return addresses

    @model_validator(mode="after")
    def _one_way_to_find_replicas(self) -> TierSpec:
        given = [k for k in ("address", "addresses", "dns") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"tier {self.name}: set exactly one of address, addresses, dns (got {given or 'none'})")
        return self

    @property
    def static_addresses(self) -> list[str]:
        """The replicas' addresses when they are listed (address / addresses); empty for a dns tier."""
        return [self.address] if self.address else list(self.addresses)

    @property
    def host(self) -> str:
        """The host of the tier's first listed replica, or its dns name (a Service name, in compose or Kubernetes)."""
        return split_address(self.address or (self.addresses[0] if self.addresses else self.dns))[0]

    @property
    def port(self) -> int:
        """The port of the tier's first listed replica, or of its dns name."""
        return split_address(self.address or (self.addresses[0] if self.addresses else self.dns))[1]

    def tokenizer_path(self) -> str:
        if self.tokenizer:
            return self.tokenizer
        default = Path(self.model) / "tokenizer.json" if self.model else None
        return str(default) if default and default.is_file() else ""


class ClassDefaults(Strict):
    """What a request of one complexity class needs when its caller gave no hints."""

    latency_budget_ms: float = Field(gt=0)
    min_accuracy: float = Field(ge=0, le=1)


class PolicyConfig(Strict):
    # Utility = accuracy_weight * accuracy - latency_weight * predicted seconds - cost_weight * $/M tokens.
    accuracy_weight: float = Field(0.2, ge=0)
    latency_weight: float = Field(0.05, ge=0)
    cost_weight: float = Field(0.2, ge=0)
    # A tier whose KV cache is fuller than this gets no new work while another tier has headroom.
    kv_pressure_threshold: float = Field(0.88, ge=0, le=1)
    # Predicted latency blends the profile with the TTFT and decode rate measured live on the tier's
    # replicas (feedback:): this is the live estimates' weight (0: profile only, 1: live only).
    live_weight: float = Field(0.5, ge=0, le=1)
    classes: dict[str, ClassDefaults] = Field(
        default_factory=lambda: {
            "fast": ClassDefaults(latency_budget_ms=10_000, min_accuracy=0.0),
            "balanced": ClassDefaults(latency_budget_ms=30_000, min_accuracy=0.3),
            "precise": ClassDefaults(latency_budget_ms=120_000, min_accuracy=0.5),
        }
    )

    @field_validator("classes")
    @classmethod
    def _all_classes(cls, classes: dict[str, ClassDefaults]) -> dict[str, ClassDefaults]:
        missing = {"fast", "balanced", "precise"} - set(classes)
        if missing:
            raise ValueError(f"policy.classes needs fast, balanced and precise; missing {sorted(missing)}")
        return classes


class BreakerConfig(Strict):
    failure_threshold: int = Field(5, ge=1)
    open_base_s: float = Field(30.0, gt=0)
    open_max_s: float = Field(300.0, gt=0)
    half_open_probes: int = Field(3, ge=1)


class RetryConfig(Strict):
    # Retries (beyond the first attempt) earn `budget_ratio` per request, up to `budget_burst` saved.
    budget_ratio: float = Field(0.1, ge=0)
    budget_burst: float = Field(20.0, ge=0)
    backoff_initial_s: float = Field(0.01, ge=0)
    backoff_max_s: float = Field(0.5, ge=0)


class PickerConfig(Strict):
    """How the router picks one replica of the chosen tier (router/pick.py)."""

    # Requests whose first N bytes agree (a conversation's opening, a long system prompt) go to the
    # same replica by rendezvous hashing, where its prefix cache is warm. 0: no affinity, least load only.
    affinity_prefix_bytes: int = Field(1024, ge=0)
    # The load threshold: the affinity replica keeps a request while its load (streams running + queued)
    # is at most affinity_load_ratio x the least-loaded replica's, or affinity_load_slack streams more,
    # whichever is more, and its KV cache is not past policy.kv_pressure_threshold while another's is;
    # past it, the least-loaded replica serves the request.
    affinity_load_ratio: float = Field(1.5, ge=1)
    affinity_load_slack: float = Field(4.0, ge=0)
    # Prefixes per tier whose last replica this router process remembers (least recently used go first):
    # a prefix moved off an overloaded replica stays on the one that now holds its cache. 0: hashing only.
    affinity_memory: int = Field(10_000, ge=0)


class FeedbackConfig(Strict):
    """Live latency feedback: what the router measures on the streams it relays, per replica
    (router/live.py); policy.live_weight says how much it counts in predicted latency."""

    # EWMA smoothing: each new stream moves the estimate this fraction of the way.
    alpha: float = Field(0.2, gt=0, le=1)
    # Streams a replica must have relayed before its live estimate counts.
    min_samples: int = Field(3, ge=1)
    # With no new stream, an estimate's weight halves this often (so a replica that lost its traffic
    # to a slow spell is tried again once the estimate has faded).
    stale_half_life_s: float = Field(30.0, gt=0)


class RequestLimits(Strict):
    """What the router accepts before any tokenizing or routing; beyond it INVALID_ARGUMENT."""

    max_prompt_bytes: int = Field(1 << 20, gt=0, description="UTF-8 bytes of prompt plus every message's content")
    max_messages: int = Field(512, gt=0)
    max_request_id_chars: int = Field(128, gt=0)


class HttpConfig(Strict):
    """The OpenAI-compatible HTTP door of the router (router/http/, docs/http.md): same core, own port."""

    enabled: bool = Field(False, description="serve POST /v1/chat/completions and friends beside gRPC")
    listen: str = Field("127.0.0.1:8000", description="HOST:PORT of the HTTP door (port 0: any free port)")
    default_model: str = Field(
        "auto", min_length=1, max_length=128,
        description="a model name that routes like 'auto' (e.g. the name a tool insists on); tier names pin",
    )
    request_timeout_s: float | None = Field(
        600.0, gt=0, description="deadline of a request that sends no x-qarr-timeout-ms header (unset: none)"
    )
    max_body_bytes: int = Field(4 << 20, gt=0, description="largest request body accepted (413 beyond it)")


class MeshConfig(Strict):
    """The whole mesh: the router's settings and its tiers."""

    listen: str = "127.0.0.1:50051"
    tiers: list[TierSpec]
    # Profiles file (schema in router/profiles.py); relative paths are relative to this config file.
    profiles: str = ""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    picker: PickerConfig = Field(default_factory=PickerConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    # Streams the router relays at once; beyond it RESOURCE_EXHAUSTED at once.
    max_in_flight: int = Field(1024, gt=0)
    # Health Check (besides Watch) and GetLoad are polled this often, each call with this deadline.
    health_interval_s: float = Field(1.0, gt=0)
    health_timeout_s: float = Field(2.0, gt=0)
    # A stream whose tier has answered no health check for this long, and that relayed nothing for as long,
    # is ended UNAVAILABLE with the count delivered (gRPC keepalive left such streams open for minutes).
    stalled_stream_s: float = Field(5.0, gt=0)
    load_interval_s: float = Field(1.0, gt=0)
    # How often the config and profiles files are checked for changes.
    reload_interval_s: float = Field(0.5, gt=0)
    # On SIGTERM, how long in-flight streams may finish.
    grace_seconds: float = Field(10.0, ge=0)
    # On SIGTERM, how long health says NOT_SERVING before new calls are refused.
    drain_notice_seconds: float = Field(1.0, ge=0)
    # /metrics port, OTLP endpoint, prompt logging (docs/observability.md).
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    # Security (docs/security.md). Unset: plaintext, no tokens, which `make up` keeps on loopback.
    tls: ServerTLS | None = None  # the router's listener
    upstream_tls: ClientTLS | None = None  # the router's connections to tiers (unset: plaintext)
    auth: AuthConfig | None = None  # bearer tokens on every router call but health
    # With auth on, streams one caller (token) may have open at once; beyond it RESOURCE_EXHAUSTED
    # (CALLER_FULL), so one caller cannot take every slot. Unset: only max_in_flight applies.
    max_in_flight_per_caller: int | None = Field(None, gt=0)
    reflection: bool = True  # gRPC server reflection on the router's listener (behind the token when auth is on)
    # HOST:PORT of a plaintext listener serving grpc.health.v1 alone, for probes that cannot do TLS (Kubernetes).
    health_listen: str | None = None
    # The OpenAI-compatible HTTP door (off unless enabled).
    http: HttpConfig = Field(default_factory=HttpConfig)

    @field_validator("tiers")
    @classmethod
    def _unique_names(cls, tiers: list[TierSpec]) -> list[TierSpec]:
        if not tiers:
            raise ValueError("at least one tier is required")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        return tiers

    @model_validator(mode="after")
    def _tiers_locked_when_auth(self) -> MeshConfig:
        # A token on the router is worth little if the tiers behind it take calls from anyone.
        locked = self.upstream_tls is not None and self.upstream_tls.cert is not None
        if self.auth is not None and not locked and not self.auth.allow_plaintext_tiers:
            raise ValueError(
                "auth is on but upstream_tls has no client certificate: tiers would take calls that skip the "
                "router's token check; set upstream_tls.cert/key and serve tiers with tls.client_ca, or say "
                "auth.allow_plaintext_tiers: true where only the router can reach them (docs/security.md)"
            )
        if self.max_in_flight_per_caller is not None and self.auth is None:
            raise ValueError("max_in_flight_per_caller needs auth: without tokens every call is the same caller")
        return self

    @model_validator(mode="after")
    def _model_names_distinct(self) -> MeshConfig:
        """Over HTTP a model name is a tier name or a name that routes: they must not collide."""
        if self.http.enabled:
            routed = {"auto", self.http.default_model}
            clash = sorted(routed & {t.name for t in self.tiers})
            if clash:
                raise ValueError(f"tier name {clash[0]!r} is also a routing model name of http (auto, default_model)")
        return self

    def tier(self, name: str) -> TierSpec:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"no tier named {name!r}; tiers: {[t.name for t in self.tiers]}")


class MeshConfigError(ValueError):
    """The mesh file cannot be read or is not a valid mesh description; the message names file and field."""


def _where(loc: tuple, data) -> str:
    """A readable path to a field: tiers[bf16].serve.kv_cache_gbi."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            name = node[key].get("name") if isinstance(node, list) and key < len(node) and isinstance(node[key], dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{name or key}]"]
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def parse_mesh(data, source: str = "mesh") -> MeshConfig:
    """Validate an already-parsed mesh document; MeshConfigError naming each bad field."""
    try:
        return MeshConfig.model_validate(data if data is not None else {})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            what = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{_where(err['loc'], data)}: {what}")
        raise MeshConfigError(f"{source}: invalid mesh description:\n  " + "\n  ".join(lines)) from None


def load_mesh(path: str | Path) -> MeshConfig:
    """Read and validate a mesh file. Relative file paths in it are taken relative to the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise MeshConfigError(f"{path}: cannot read the mesh file: {e}") from None
    return _relative_to(parse_mesh(data, str(path)), path.parent)


def _relative_to(config: MeshConfig, base: Path) -> MeshConfig:
    """Relative paths in the file (profiles, certificates, keys, tokens) are taken relative to its folder."""

    def resolve(path: str | None) -> str | None:
        return str(base / path) if path and not Path(path).is_absolute() else path

    def absolute(path: str | None) -> str | None:  # secrets' paths: valid from any working directory
        return str((base / path).absolute()) if path and not Path(path).is_absolute() else path

    def files(block: BaseModel | None, *names: str) -> BaseModel | None:
        return None if block is None else block.model_copy(update={n: absolute(getattr(block, n)) for n in names})

    server = ("cert", "key", "client_ca")
    tiers = [
        t.model_copy(update={"serve": t.serve.model_copy(update={"tls": files(t.serve.tls, *server)})}) if t.serve.tls else t
        for t in config.tiers
    ]
    return config.model_copy(update={
        "profiles": resolve(config.profiles) or "",
        "tls": files(config.tls, *server),
        "upstream_tls": files(config.upstream_tls, "ca", "cert", "key"),
        "auth": files(config.auth, "tokens_file"),
        "tiers": tiers,
    })
