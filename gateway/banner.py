"""What the gateway says when it starts: the same banner and the same warnings whichever way
it is started (`./scripts/serve`, `python -m gateway serve`, the `mps-gateway` console script,
`uvicorn --factory gateway.app:create_app [--workers N]`).

`startup_warnings` is the one place that decides what deserves a warning at start-up: add a
condition there (authentication, say) and every way of starting prints it, in the banner's box
for people (text logs) and as WARNING lines for a log pipeline (JSON logs).
"""

from __future__ import annotations

import json
import logging

from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind

__all__ = ["announce", "banner", "callers_line", "startup_warnings"]

logger = logging.getLogger("gateway")

_BAR = "!" * 78


def startup_warnings(settings: GatewaySettings) -> list[str]:
    """What an operator must not miss about this configuration, one sentence each."""
    warnings = []
    if settings.upstream_kind is UpstreamKind.EMBEDDED_SIMULATOR:
        warnings.append(
            "No ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET and no GATEWAY_MPS_ENDPOINT are set: "
            "serving the EMBEDDED MPS SIMULATOR, not the cloud. Its jobs are demo data."
        )
    elif not settings.auth_methods:
        # Demo data needs no guard; an account's jobs do.
        warnings.append(
            "No authentication of callers (GATEWAY_AUTH=none): whoever reaches this port "
            "reads every job of the account."
        )
    return warnings


def callers_line(settings: GatewaySettings) -> str:
    """What the banner says of callers: how they authenticate, or that nobody is asked."""
    methods = settings.auth_methods
    if not methods:
        return (
            "callers: NO AUTHENTICATION (GATEWAY_AUTH=none): whoever reaches this port reads "
            "every job"
        )
    return f"callers: authenticated by {', '.join(sorted(methods))} (GATEWAY_AUTH)"


def announce(settings: GatewaySettings, url: str | None) -> None:
    """Say that the gateway starts: the banner on stdout with text logs; with JSON logs, each
    warning as a WARNING record (a log pipeline reads records, not banners). `url` is the
    GraphQL endpoint's, when the caller knows it (uvicorn prints its own address otherwise)."""
    if settings.log_format == "json":
        for warning in startup_warnings(settings):
            logger.warning("%s", warning)
        return
    print(banner(settings, url), flush=True)


def banner(settings: GatewaySettings, url: str | None) -> str:
    """The start banner: where GraphQL is, the warnings in a box, and on the embedded
    simulator a query and a subscription to try."""
    where = url or "/graphql (on the address uvicorn prints)"
    base = url.removesuffix("/graphql") if url else "http://<host>:<port>"
    endpoint = url or f"{base}/graphql"
    lines = [f"mps-gateway: GraphiQL and the GraphQL endpoint at {where}"]
    warnings = startup_warnings(settings)
    if warnings:
        lines += [_BAR, *(f"!! {warning}" for warning in warnings), _BAR]
    kind = settings.upstream_kind
    if kind is not UpstreamKind.EMBEDDED_SIMULATOR:
        lines += [f"upstream: {settings.upstream_url} ({kind.value})", callers_line(settings)]
        return "\n".join(lines)

    from gateway.graphiql.page import demo_query, demo_subscription
    from gateway.simulator import demo_job_ids, moving_demo_job_id

    simulator = SimulatorSettings()
    ids = demo_job_ids(simulator)[:3]
    moving = moving_demo_job_id(simulator.seed)
    phase = f"{simulator.demo_phase_seconds:g}"
    period = f"{3 * simulator.demo_phase_seconds:g}"
    lines += [
        "Try this query in GraphiQL (it opens with it, and with the subscription below):",
        *(f"  {line}" for line in demo_query(ids).splitlines()),
        f"or: curl -s {endpoint} -H 'content-type: application/json' -d '{_curl_body(ids[0])}'",
        "",
        f"A demo job that moves: {moving} is QUEUING from now, ANALYSING after {phase} s,",
        f"SUCCESS after {2 * simulator.demo_phase_seconds:g} s. Follow it in GraphiQL "
        "(over WebSocket):",
        *(f"  {line}" for line in demo_subscription(moving).splitlines()),
        f"Each run is a new job (a finished job never changes): the next starts {period} s "
        "after this one,",
        f"named by its userData.nextJobId; the latest runs are listed at {base}/_simulator/jobs",
        callers_line(settings),
    ]
    return "\n".join(lines)


def _curl_body(job_id: str) -> str:
    query = f'{{ job(id: "{job_id}") {{ id state result {{ files {{ url }} }} }} }}'
    return json.dumps({"query": query})
