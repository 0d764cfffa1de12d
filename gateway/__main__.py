"""Command line: `python -m gateway [serve|simulator|export-schema|hash-api-key]` (also
`mps-gateway`)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Sequence

import strawberry
import uvicorn

from gateway.banner import announce
from gateway.callers.caller import Scope
from gateway.observe.logs import LogFormat, configure_logging
from gateway.settings import GatewaySettings, SimulatorSettings
from gateway.startup import settings_or_exit
from gateway.usage import settings_epilog

logger = logging.getLogger("gateway")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `serve` (the default), `simulator`, `export-schema`, `hash-api-key`."""
    parser = argparse.ArgumentParser(
        prog="mps-gateway",
        description="GraphQL gateway over Alibaba Cloud MPS smart-production jobs. "
        "`mps-gateway COMMAND --help` tells more of each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the gateway (the default command)",
        description="Run the gateway. Everything but the address is set by environment "
        "variables, listed below with their defaults.",
        epilog=settings_epilog(GatewaySettings),
        formatter_class=_HelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    simulator = commands.add_parser(
        "simulator",
        help="run the MPS simulator alone",
        description="Run the MPS simulator (API 2014-06-18) alone, for gateways to call "
        "over HTTP (GATEWAY_MPS_ENDPOINT).",
        epilog=settings_epilog(SimulatorSettings),
        formatter_class=_HelpFormatter,
    )
    simulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    simulator.add_argument("--port", type=int, default=9000, help="port to listen on")
    commands.add_parser(
        "export-schema",
        help="print the GraphQL schema (SDL)",
        description="Print the GraphQL schema (SDL), as schema.graphql holds it.",
    )
    hash_key = commands.add_parser(
        "hash-api-key",
        help="make a new API key: prints the key (give it to the caller) and the entry to add "
        "to GATEWAY_API_KEYS_FILE (which holds its hash only)",
    )
    hash_key.add_argument("--name", required=True, help="the caller's name (logs, metrics)")
    hash_key.add_argument("--tenant", help="the tenant it acts for (none: an operator's key)")
    hash_key.add_argument(
        "--scope",
        action="append",
        choices=[scope.value for scope in Scope],
        help="a scope it has (repeat the option for several; default jobs:read)",
    )
    hash_key.add_argument(
        "--stdin",
        action="store_true",
        help="hash the key read from standard input instead of making a new one",
    )
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help; the epilog (the settings) as written."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.command == "export-schema":
        from gateway.api.schema import build_schema

        sys.stdout.write(export_schema(build_schema(settings_or_exit(GatewaySettings))))
        return 0
    if args.command == "simulator":
        return run_simulator(args.host, args.port)
    if args.command == "hash-api-key":
        return hash_api_key(args.name, args.tenant, args.scope or [Scope.READ.value], args.stdin)
    return run_gateway(getattr(args, "host", "127.0.0.1"), getattr(args, "port", 8000))


def export_schema(schema: strawberry.Schema) -> str:
    """The SDL that `schema.graphql` holds."""
    return schema.as_str() + "\n"


def hash_api_key(name: str, tenant: str | None, scopes: list[str], from_stdin: bool) -> int:
    """Print the key (a new one; not when read from stdin) on one line, then its entry for
    the keys file on the next: the key is shown once, and the file keeps only its hash."""
    from gateway.callers.api_keys import key_hash, new_key

    key = sys.stdin.readline().strip() if from_stdin else new_key()
    if not key:
        print("mps-gateway: expected a key on standard input, received none.", file=sys.stderr)
        return 2
    entry = {"name": name, "tenant": tenant, "scopes": sorted(set(scopes)), "sha256": key_hash(key)}
    if not from_stdin:
        print(key)
    print(json.dumps(entry))
    return 0


def run_gateway(host: str, port: int) -> int:
    from gateway.app import create_app
    from gateway.callers.api_keys import ApiKeysFileError
    from gateway.callers.jwks import KeySetError
    from gateway.persisted import ManifestError
    from gateway.server import server_options

    settings = settings_or_exit(GatewaySettings)
    _configure_logging(settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except (KeySetError, ApiKeysFileError) as refused:
        # A key set or API keys file that cannot be used: one line, never its content.
        print(f"mps-gateway: bad settings: {refused}", file=sys.stderr, flush=True)
        return 2
    except ManifestError as exc:
        # An operator's mistake, said in a sentence: no traceback.
        logger.error("%s", exc)
        return 2
    # Everything built so far (modules, the schema, settings) lives as long as the process: move
    # it out of the collector's sight, so that each full collection no longer walks tens of
    # thousands of objects that can never be garbage (it cut a full pass from ~45 to ~5 ms).
    gc.collect()
    gc.freeze()
    announce(settings, f"http://{host}:{port}/graphql")
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
        SIMULATOR_KEEP_ALIVE,
        DroppedConnectionLogFilter,
        create_simulator_app,
        moving_demo_job_id,
    )

    settings = settings_or_exit(SimulatorSettings, program="mps-gateway simulator")
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
    uvicorn.run(
        create_simulator_app(settings),
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=SIMULATOR_KEEP_ALIVE,
    )
    return 0


def _configure_logging(level: str, fmt: LogFormat = "text") -> None:
    configure_logging(level, fmt)


if __name__ == "__main__":
    raise SystemExit(main())
