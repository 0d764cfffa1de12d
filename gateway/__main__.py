"""Command line: `python -m gateway [serve|simulator|export-schema]` (also `mps-gateway`)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Sequence

import strawberry
import uvicorn

from gateway.observe.logs import LogFormat, configure_logging
from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind

logger = logging.getLogger("gateway")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `serve` (the default), `simulator`, `export-schema`."""
    parser = argparse.ArgumentParser(
        prog="mps-gateway",
        description="GraphQL gateway over Alibaba Cloud MPS smart-production jobs.",
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the gateway (the default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    simulator = commands.add_parser("simulator", help="run the MPS simulator alone")
    simulator.add_argument("--host", default="127.0.0.1")
    simulator.add_argument("--port", type=int, default=9000)
    commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.command == "export-schema":
        from gateway.api.schema import build_schema

        sys.stdout.write(export_schema(build_schema(GatewaySettings())))
        return 0
    if args.command == "simulator":
        return run_simulator(args.host, args.port)
    return run_gateway(getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8000))


def export_schema(schema: strawberry.Schema) -> str:
    """The SDL that `schema.graphql` holds."""
    return schema.as_str() + "\n"


def run_gateway(host: str, port: int) -> int:
    from gateway.app import create_app
    from gateway.persisted import ManifestError
    from gateway.server import server_options

    settings = GatewaySettings()
    _configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except ManifestError as exc:
        # An operator's mistake, said in a sentence: no traceback.
        logger.error("%s", exc)
        return 2
    # Everything built so far (modules, the schema, settings) lives as long as the process: move
    # it out of the collector's sight, so that each full collection no longer walks tens of
    # thousands of objects that can never be garbage (it cut a full pass from ~45 to ~5 ms).
    gc.collect()
    gc.freeze()
    if settings.log_format == "text":
        # For people; a log pipeline reading JSON lines gets the "Gateway started" line instead.
        print(_banner(settings, host, port), flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        # uvicorn's loggers go to the handler `_configure_logging` made (its format, request
        # ids); the access lines are the app's own (they name the GraphQL operation).
        log_config=None,
        access_log=False,
        **server_options(settings),
    )
    return 0


def run_simulator(host: str, port: int) -> int:
    from gateway.simulator import (
        DroppedConnectionLogFilter,
        create_simulator_app,
        moving_demo_job_id,
    )

    settings = SimulatorSettings()
    _configure_logging("INFO")
    print(
        "MPS simulator (API 2014-06-18) on "
        f"http://{host}:{port}/\n"
        f"  accepts AccessKeyId {settings.access_key_id!r} with its secret "
        f"{settings.access_key_secret.get_secret_value()!r} (demo values unless "
        "SIMULATOR_ACCESS_KEY_ID/SECRET are set)\n"
        f"  QPS limit per operation: {settings.qps} (SIMULATOR_QPS)\n"
        f"  a demo job that moves: {moving_demo_job_id(settings.seed)}, Queuing from now "
        "(each later run is a new job: see the jobs listing)\n"
        f"  jobs: http://{host}:{port}/_simulator/jobs   stats: http://{host}:{port}/_simulator/stats",
        flush=True,
    )
    # Dropped connections are a fault the simulator injects on purpose: no traceback for them.
    logging.getLogger("uvicorn.error").addFilter(DroppedConnectionLogFilter())
    uvicorn.run(create_simulator_app(settings), host=host, port=port, log_level="warning")
    return 0


def _banner(settings: GatewaySettings, host: str, port: int) -> str:
    url = f"http://{host}:{port}/graphql"
    lines = [f"mps-gateway: GraphiQL and the GraphQL endpoint at {url}"]
    kind = settings.upstream_kind
    if kind is UpstreamKind.EMBEDDED_SIMULATOR:
        from gateway.graphiql.page import demo_query, demo_subscription
        from gateway.simulator import demo_job_ids, moving_demo_job_id

        simulator = SimulatorSettings()
        ids = demo_job_ids(simulator)[:3]
        moving = moving_demo_job_id(simulator.seed)
        phase = f"{simulator.demo_phase_seconds:g}"
        period = f"{3 * simulator.demo_phase_seconds:g}"
        bar = "!" * 78
        lines += [
            bar,
            "!! No ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET and no GATEWAY_MPS_ENDPOINT are set:",
            "!! serving the EMBEDDED MPS SIMULATOR, not the cloud. Its jobs are demo data.",
            bar,
            "Try this query in GraphiQL (it opens with it, and with the subscription below):",
            *(f"  {line}" for line in demo_query(ids).splitlines()),
            f"or: curl -s {url} -H 'content-type: application/json' -d '{_curl_body(ids[0])}'",
            "",
            f"A demo job that moves: {moving} is QUEUING from now, ANALYSING after {phase} s,",
            f"SUCCESS after {2 * simulator.demo_phase_seconds:g} s. Follow it in GraphiQL "
            "(over WebSocket):",
            *(f"  {line}" for line in demo_subscription(moving).splitlines()),
            f"Each run is a new job (a finished job never changes): the next starts {period} s "
            "after this one,",
            "named by its userData.nextJobId; the latest runs are listed at "
            f"http://{host}:{port}/_simulator/jobs",
        ]
    else:
        lines.append(f"upstream: {settings.upstream_url} ({kind.value})")
    return "\n".join(lines)


def _curl_body(job_id: str) -> str:
    query = f'{{ job(id: "{job_id}") {{ id state result {{ files {{ url }} }} }} }}'
    return json.dumps({"query": query})


def _configure_logging(level: str, fmt: LogFormat = "text") -> None:
    configure_logging(level, fmt)


if __name__ == "__main__":
    raise SystemExit(main())
