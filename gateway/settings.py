"""Every knob of the gateway and the simulator: the one module that reads the environment.

Settings are parsed once (by `GatewaySettings()` / `SimulatorSettings()`) and passed down; no other
module looks at `os.environ`. Cloud credentials use Alibaba Cloud's standard variable names; every
other knob is `GATEWAY_*` (or `SIMULATOR_*` for the simulator).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The demo key pair the simulator accepts unless told otherwise. Public on purpose: it guards
#: nothing but a local stand-in, and lets the gateway sign requests as it does for the cloud.
SIMULATOR_DEMO_ACCESS_KEY_ID = "LTAI5tSimulatorDemoKey"
SIMULATOR_DEMO_ACCESS_KEY_SECRET = "simulator-demo-secret-not-a-real-one"


#: The logging levels GATEWAY_LOG_LEVEL may name.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UpstreamKind(enum.Enum):
    """Where the gateway's upstream calls go."""

    EMBEDDED_SIMULATOR = "embedded simulator"
    ENDPOINT = "endpoint"
    CLOUD = "cloud"


class GatewaySettings(BaseSettings):
    """Settings of a gateway process. Every field maps to one environment variable."""

    # hide_input_in_errors: a validation error would otherwise print the input, secrets included.
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # --- upstream ---------------------------------------------------------------------------
    access_key_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ALIBABA_CLOUD_ACCESS_KEY_ID", "access_key_id"),
        description="AccessKey ID of the cloud account (or RAM user).",
    )
    access_key_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "access_key_secret"),
        description="AccessKey secret; never logged, never returned.",
    )
    security_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ALIBABA_CLOUD_SECURITY_TOKEN", "security_token"),
        description="STS security token, when the key pair is temporary.",
    )
    region_id: str = Field(
        default="cn-hangzhou",
        validation_alias=AliasChoices("ALIBABA_CLOUD_REGION_ID", "region_id"),
        description="Region whose MPS endpoint is called when no endpoint is given.",
    )
    mps_endpoint: str | None = Field(
        default=None,
        description="Base URL of the MPS API (an external simulator, a VPC endpoint...).",
    )
    connect_timeout: float = Field(default=3.0, gt=0, description="Seconds to connect upstream.")
    read_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for an answer.")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries after a throttled, failed or timed-out call."
    )
    retry_base_delay: float = Field(
        default=0.2, ge=0, description="First retry delay in seconds (doubles, full jitter)."
    )
    retry_max_delay: float = Field(default=2.0, ge=0, description="Largest retry delay.")

    # --- budget -----------------------------------------------------------------------------
    upstream_qps: int = Field(
        default=100,
        ge=1,
        description="QueryIProductionJob calls allowed in any rolling second, for the account.",
    )
    upstream_window_margin: float = Field(
        default=0.005,
        ge=0,
        description="Seconds added to the 1 s window: room for the two clocks' rounding.",
    )
    upstream_concurrency: int = Field(
        default=100, ge=1, description="Upstream calls in flight at once, per process."
    )
    submit_qps: int = Field(
        default=100,
        ge=1,
        description="SubmitIProductionJob calls allowed in any rolling second, for the account "
        "(a limit of its own, apart from queries).",
    )

    # --- submitting jobs --------------------------------------------------------------------
    idempotency_ttl: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="Seconds an idempotency key of submitJob is remembered (per tenant): the "
        "same key within it answers the same job, without a second submit.",
    )

    # --- cache ------------------------------------------------------------------------------
    cache_terminal_ttl: float = Field(
        default=24 * 3600.0, ge=0, description="Seconds a Success/Fail snapshot is kept."
    )
    cache_running_ttl: float = Field(
        default=1.0,
        ge=0,
        description="Seconds a Queuing/Analysing snapshot is kept at most (its end rounded down "
        "to a grid of the clock, so that snapshots fetched together expire together).",
    )
    cache_not_found_ttl: float = Field(
        default=5.0, ge=0, description="Seconds an unknown job id is remembered as unknown."
    )
    cache_max_entries: int = Field(
        default=100_000, ge=1, description="Snapshots kept in memory (least recently used go)."
    )

    # --- response cache ---------------------------------------------------------------------
    answer_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bytes of kept answers (queries of finished jobs only, as sent) one process "
        "holds in memory; 0 keeps none and turns the HTTP caching headers off.",
    )
    answer_cache_max_answer_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="Longest answer body kept; longer answers are made anew each time.",
    )

    # --- shared state (several processes) ---------------------------------------------------
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis holding the budget and the snapshot cache shared by every gateway "
        "process of the account (redis://[user:password@]host:port/db); unset: one process, "
        "in memory. A secret, as it may hold a password.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="Whether redis_url names a node of a Redis Cluster (or a Valkey cluster) "
        "rather than a single Redis: the gateway then spreads its keys over the cluster's "
        "slots (each id's keys, and the budget's, share a hash tag).",
    )
    redis_prefix: str = Field(
        default="mpsgw",
        min_length=1,
        pattern=r"^\S+$",
        description="Prefix of every Redis key, so several gateways (or tests) share one Redis.",
    )
    redis_timeout: float = Field(
        default=0.5,
        gt=0,
        description="Seconds to connect to Redis or wait for its answer before falling back.",
    )
    expected_replicas: int = Field(
        default=1,
        ge=1,
        description="Gateway processes sharing the account: while Redis is unreachable each "
        "one allows itself upstream_qps // expected_replicas calls per second (at least 1).",
    )

    # --- GraphQL ----------------------------------------------------------------------------
    request_deadline: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a GraphQL request may take from its arrival (its first byte): its "
        "waits for upstream slots stop then, and a request not started by then is refused.",
    )
    admission_max_wait: float = Field(
        default=0.25,
        ge=0,
        description="Seconds a GraphQL request over HTTP may wait from its arrival to its start "
        "(a turn or two of the event loop: long only when the process is short of CPU); one "
        "that waited longer is refused with OVERLOADED (retryable); 0: no limit.",
    )
    admission_target_wait: float = Field(
        default=0.05,
        ge=0,
        description="Seconds of wait to start above which a GraphQL request over HTTP lowers "
        "the number of requests this process lets run at once (to 3/4 of those running; each "
        "shorter wait raises it by one): an adaptive limit for a process short of CPU; 0: off.",
    )
    max_concurrent_requests: int = Field(
        default=0,
        ge=0,
        description="GraphQL requests over HTTP this process runs at once; one more is refused "
        "at once with OVERLOADED (retryable) instead of queueing to answer late; 0: no limit.",
    )
    max_ids: int = Field(default=100, ge=1, description="Most ids accepted by jobs(ids).")
    max_page_size: int = Field(
        default=100,
        ge=1,
        description="Most files one answer lists per result: the largest `first` of "
        "JobResult.files and JobResult.filesConnection, and what either gives without one.",
    )
    max_query_depth: int = Field(default=12, ge=1, description="Deepest query accepted.")
    max_aliases: int = Field(default=50, ge=1, description="Most aliases in one query.")
    max_tokens: int = Field(default=5_000, ge=1, description="Most tokens in one query document.")
    max_cost: int = Field(
        default=100_000,
        ge=1,
        description="Most an operation may cost (about one unit per value it resolves; lists "
        "count their items, see gateway/api/cost.py): more is QUERY_TOO_COMPLEX, unrun.",
    )
    graphiql: bool = Field(default=True, description="Serve GraphiQL to browsers at /graphql.")
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest HTTP request body accepted (bytes)."
    )
    cors_origins: str = Field(
        default="*",
        description="Comma-separated origins browsers may call from; empty turns CORS off.",
    )
    cors_headers: str = Field(
        default="",
        description="Comma-separated request headers browsers may send, added to those the "
        "gateway allows anyway (gateway/cors.py: what Apollo Client, urql, OpenTelemetry and "
        "Sentry send); * allows any.",
    )
    cors_expose_headers: str = Field(
        default="",
        description="Comma-separated response headers browser scripts may read, added to those "
        "exposed anyway (x-request-id, etag, retry-after, www-authenticate).",
    )
    cors_max_age: int = Field(
        default=7200,
        ge=0,
        description="Seconds a browser may cache a preflight's answer (Chromium caps it at 7200).",
    )

    # --- persisted queries ------------------------------------------------------------------
    apq: bool = Field(
        default=True,
        description="Automatic persisted queries (Apollo's protocol): a client may send a "
        "document's sha256 instead of its text once it has registered it (on, or off).",
    )
    apq_ttl: float = Field(
        default=86_400.0,
        gt=0,
        description="Seconds a registered document is kept (in Redis, and in this process's "
        "memory) after it was last registered.",
    )
    apq_max_document_bytes: int = Field(
        default=65_536,
        ge=1,
        description="Largest document registered (UTF-8 bytes); a longer one runs, unregistered.",
    )
    apq_memory_bytes: int = Field(
        default=16 << 20,
        ge=0,
        description="Documents this process keeps in memory (UTF-8 bytes, least recently used "
        "go first): all of them without Redis, a copy of the shared ones with it.",
    )
    apq_registrations_per_second: float = Field(
        default=20.0,
        gt=0,
        description="Documents this process registers per second at most (a token bucket, "
        "apq_registration_burst at once): beyond, a document sent with its hash runs but is not "
        "registered, so no client can fill the shared Redis.",
    )
    apq_registration_burst: int = Field(
        default=100, ge=1, description="Registrations this process may make at once."
    )
    apq_registered_bytes_per_ttl: int = Field(
        default=16 << 20,
        ge=1,
        description="UTF-8 bytes this process registers per apq_ttl at most (each document "
        "charged 160 bytes more for its key): what it keeps in Redis stays under twice this.",
    )
    trusted_documents: Path | None = Field(
        default=None,
        description="A JSON manifest of the only documents allowed to run (sha256 -> document: "
        "Apollo's persisted-query manifest, or a plain map); unset: any document runs.",
    )

    # --- client connections -----------------------------------------------------------------
    idle_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a client connection may stay idle (before its first request, or "
        "between requests) before the gateway closes it.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's headers, from their first byte.",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send a request's whole body, from the end of its "
        "headers (408 after that).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Client connections (HTTP and WebSocket) one process holds at once; those "
        "beyond are closed as soon as they are accepted.",
    )

    # --- event streams (graphql-sse) ----------------------------------------------------------
    sse_max_streams: int = Field(
        default=500,
        ge=1,
        description="Server-Sent Event streams one process serves at once; one more is "
        "answered 503 TOO_MANY_STREAMS. Keep it under max_connections, so that streams never "
        "take every connection from plain requests.",
    )
    sse_keepalive: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between two keep-alive comments on an event stream with no event "
        "to send, so that proxies keep it open and a vanished client is noticed.",
    )
    sse_write_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds one write of an event stream may wait for a client that reads "
        "nothing; then the client is dropped (under `python -m gateway serve`).",
    )

    # --- process ----------------------------------------------------------------------------
    log_level: str = Field(
        default="INFO",
        description="Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How log lines are written: text, or json (one JSON object a line).",
    )
    access_log: bool = Field(
        default=True,
        description="Log one line per request (method, path, status, time, GraphQL operation).",
    )

    # --- operations -------------------------------------------------------------------------
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /metrics on this port only (a private listener), not on the main "
        "one (0: a port the system picks, named in the log); unset: /metrics on the main port.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Bearer token that unlocks the detailed report of /readyz on the main port "
        "(Authorization: Bearer <token>; at least 16 characters); unset: the main port answers "
        "the status alone, and the report is on the metrics port only (GATEWAY_METRICS_PORT).",
    )
    shutdown_grace: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="Seconds a process keeps serving after SIGTERM while /readyz answers "
        "'stopping' (503), so that load balancers stop sending it requests before it closes; "
        "then it finishes the requests under way and exits. A second SIGTERM cuts it short.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of the private /metrics listener (0.0.0.0 for every interface).",
    )

    # --- callers --------------------------------------------------------------------------
    auth: str | None = Field(
        default=None,
        description="How callers authenticate: a comma-separated list of jwt and api-key, or "
        "none (no authentication: everyone may do everything). Unset: none on the embedded "
        "simulator, and a refusal to start with cloud credentials.",
    )
    jwt_jwks_url: str | None = Field(
        default=None,
        description="URL of the JSON Web Key Set whose keys sign the callers' tokens (an OIDC "
        "provider's jwks_uri); cached, fetched again for a key id it does not hold.",
    )
    jwt_jwks_file: str | None = Field(
        default=None, description="A file holding that key set, instead of the URL."
    )
    jwt_issuer: str | None = Field(
        default=None, description="The `iss` every token must carry (the provider's issuer)."
    )
    jwt_audience: str | None = Field(
        default=None, description="The `aud` every token must carry (this gateway's API)."
    )
    jwt_leeway: float = Field(
        default=30.0,
        ge=0,
        le=300,
        description="Seconds of clock difference allowed when checking exp and nbf.",
    )
    jwt_scope_claim: str = Field(
        default="scope",
        min_length=1,
        description="Claim holding the token's scopes (space-separated, or a list).",
    )
    jwt_jwks_min_refresh: float = Field(
        default=30.0,
        ge=0,
        description="Seconds at least between two fetches of the key set for an unknown key id.",
    )
    jwt_jwks_max_age: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a fetched key set is used before it is fetched again.",
    )
    tenant_claim: str = Field(
        default="tenant", min_length=1, description="Claim naming the caller's tenant."
    )
    api_keys_file: str | None = Field(
        default=None,
        description="JSON file of API keys (name, tenant, scopes and the key's hash; see "
        "`python -m gateway hash-api-key`).",
    )
    default_tenant: str | None = Field(
        default=None,
        min_length=1,
        description="The tenant owning jobs submitted outside the gateway (no owner in their "
        "UserData); unset: only callers with jobs:read:all see them.",
    )
    tenant_qps: float | None = Field(
        default=None,
        gt=0,
        description="Operations per second one tenant may send to this process (a burst of "
        "as many); more are RATE_LIMITED. Unset: no cap.",
    )

    @property
    def upstream_window(self) -> float:
        """Seconds a completed call keeps its budget slot: the upstream's 1 s plus the margin."""
        return 1.0 + self.upstream_window_margin

    @property
    def fallback_qps(self) -> int:
        """This process's share of `upstream_qps` while it cannot reach the shared budget."""
        return self.fallback_share(self.upstream_qps)

    def fallback_share(self, qps: int) -> int:
        """This process's share of an account limit of `qps` calls per second while it cannot
        reach the shared budget."""
        return max(1, qps // self.expected_replicas)

    @property
    def redis_location(self) -> str | None:
        """Where Redis is, fit for a log line: `host:port` (or the socket path), never the
        password the URL may hold. None when no Redis is configured."""
        if self.redis_url is None:
            return None
        parts = urlsplit(self.redis_url.get_secret_value())
        if parts.scheme == "unix":
            return parts.path
        try:
            port = parts.port
        except ValueError:
            port = None
        return f"{parts.hostname or 'localhost'}:{port or 6379}"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        # An unknown level would otherwise fail later, in logging, with a traceback.
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"Expected one of {', '.join(LOG_LEVELS)}.")
        return level

    @model_validator(mode="after")
    def _whole_key_pair(self) -> GatewaySettings:
        # Half a key pair is a deployment mistake (a secret that failed to mount), not a wish
        # to run on the demo simulator: refuse to start rather than serve demo data. A blank
        # value is such a mistake too (`KEY_ID=${UNSET_VAR}`), not a way of leaving it unset.
        for name, value in (
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", self.access_key_id),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", self.access_key_secret),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", self.security_token),
        ):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if text is not None and not text.strip():
                raise ValueError(
                    f"Expected {name} to be unset or to hold a value, received a blank one."
                )
        has_id, has_secret = self.access_key_id is not None, self.access_key_secret is not None
        if has_id != has_secret:
            given, missing = (
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
                if has_id
                else ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_ID")
            )
            raise ValueError(f"Expected both {given} and {missing}, received only {given}.")
        if self.security_token is not None and not has_id:
            raise ValueError(
                "Expected ALIBABA_CLOUD_SECURITY_TOKEN with its key pair "
                "(ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET), received "
                "the token alone."
            )
        return self

    @property
    def auth_methods(self) -> frozenset[str]:
        """The authentication methods in force (`jwt`, `api-key`), empty for none."""
        if self.auth is None:
            return frozenset()
        return frozenset(part.strip() for part in self.auth.split(",")) - {"none"}

    @model_validator(mode="after")
    def _callers_authenticated(self) -> GatewaySettings:
        # Safe by default: an account's jobs are never served to everyone unless asked for.
        # The simulator's public demo key guards nothing: only a real key pair needs callers
        # authenticated.
        real_credentials = self.access_key_id not in (None, SIMULATOR_DEMO_ACCESS_KEY_ID)
        if self.auth is None:
            if real_credentials:
                raise ValueError(
                    "Expected GATEWAY_AUTH (jwt, api-key, or none to serve every caller "
                    "unauthenticated) with cloud credentials, received none: refusing to "
                    "serve the account's jobs to whoever reaches the gateway."
                )
            return self
        parts = [part.strip() for part in self.auth.split(",")]
        known = {"jwt", "api-key", "none"}
        unknown = [part for part in parts if part not in known]
        if unknown or not parts or ("none" in parts and len(parts) > 1):
            raise ValueError(
                "Expected GATEWAY_AUTH to be a comma-separated list of jwt and api-key, or "
                f"none alone, received {self.auth[:60]!r}."
            )
        if "jwt" in parts:
            if (self.jwt_jwks_url is None) == (self.jwt_jwks_file is None):
                raise ValueError(
                    "Expected one of GATEWAY_JWT_JWKS_URL and GATEWAY_JWT_JWKS_FILE with "
                    "GATEWAY_AUTH=jwt, received "
                    + ("both." if self.jwt_jwks_url is not None else "neither.")
                )
            if not self.jwt_issuer or not self.jwt_audience:
                raise ValueError(
                    "Expected GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE with GATEWAY_AUTH=jwt, "
                    "received "
                    + ("neither." if not (self.jwt_issuer or self.jwt_audience) else "only one.")
                )
        if "api-key" in parts and self.api_keys_file is None:
            raise ValueError(
                "Expected GATEWAY_API_KEYS_FILE with GATEWAY_AUTH=api-key, received none."
            )
        return self

    @property
    def upstream_kind(self) -> UpstreamKind:
        if self.mps_endpoint:
            return UpstreamKind.ENDPOINT
        if self.access_key_id and self.access_key_secret:
            return UpstreamKind.CLOUD
        return UpstreamKind.EMBEDDED_SIMULATOR

    @property
    def upstream_url(self) -> str:
        """Base URL of the upstream (for the embedded simulator, a name only the ASGI transport
        sees)."""
        kind = self.upstream_kind
        if kind is UpstreamKind.ENDPOINT:
            assert self.mps_endpoint is not None
            return self.mps_endpoint.rstrip("/") + "/"
        if kind is UpstreamKind.CLOUD:
            return f"https://mts.{self.region_id}.aliyuncs.com/"
        return "http://embedded-simulator/"


class SimulatorSettings(BaseSettings):
    """Settings of the MPS simulator, embedded or standalone."""

    model_config = SettingsConfigDict(
        env_prefix="SIMULATOR_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    access_key_id: str = Field(
        default=SIMULATOR_DEMO_ACCESS_KEY_ID, description="The one AccessKey ID accepted."
    )
    access_key_secret: SecretStr = Field(
        default=SecretStr(SIMULATOR_DEMO_ACCESS_KEY_SECRET),
        description="Its secret.",
    )
    qps: int = Field(
        default=100, ge=1, description="Calls per operation allowed in any rolling second."
    )
    seed: int = Field(default=20140618, description="Seed of the demo job set and of faults.")
    queue_seconds: float = Field(
        default=2.0, ge=0, description="Seconds a submitted job stays Queuing."
    )
    run_seconds: float = Field(
        default=5.0, ge=0, description="Seconds a submitted job stays Analysing."
    )
    demo_phase_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Seconds each phase of a moving demo job lasts: Queuing, Analysing, then "
        "finished while it is its slot's latest run; each slot starts a new job every three.",
    )
    latency_ms: float = Field(default=0.0, ge=0, description="Mean added latency per call.")
    latency_jitter_ms: float = Field(
        default=0.0, ge=0, description="Uniform jitter (+/-) around the mean latency."
    )
    error_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of calls answered 503 ServiceUnavailable."
    )
    malformed_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of calls answered with a garbled body."
    )
    drop_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of calls whose connection is dropped."
    )
    max_jobs: int = Field(
        default=100_000,
        ge=1,
        description="Submitted and planted jobs kept in memory (the oldest go first; the demo "
        "set is always kept).",
    )
