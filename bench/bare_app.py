"""The baseline of `bench.cached_job`: a bare Strawberry app that answers `job(id)` with a constant.

It has the gateway's shape for the fields the benchmark queries (the same type, enum and field
names, the same scalars: `ID`, `JSON`, `DateTime`), the documented example job's values, and the
two Strawberry extensions the gateway's speed rests on (`ParserCache`, `ValidationCache`, same
sizes as in `gateway/api/schema.py`). Nothing else: no loader, no cache, no limits, no error
masking, no middleware. It is served by `strawberry.asgi.GraphQL` at /graphql in a Starlette app,
under `uvicorn.run` called exactly as `gateway/__main__.py` calls it, so that the only
difference the benchmark sees is the gateway itself.

    python -m bench.bare_app --host 127.0.0.1 --port 8100 --log-level info
"""

from __future__ import annotations

import argparse
import enum
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.scalars import JSON

#: The documented example job: the first of `demo_job_ids(SimulatorSettings())`.
JOB_ID = "88c6ca184c0e432bbf5b665e2a15d0c1"
_FILES_BASE = "https://example-bucket.oss-cn-hangzhou.aliyuncs.com/iproduction/"


@strawberry.enum
class JobState(enum.Enum):
    QUEUING = "Queuing"
    ANALYSING = "Analysing"
    SUCCESS = "Success"
    FAIL = "Fail"
    UNKNOWN = "Unknown"


@strawberry.type
class ResultFile:
    name: str
    content_type: str | None
    url: str | None


@strawberry.type
class JobResult:
    code: str | None
    succeeded: bool
    files: list[ResultFile]


@strawberry.type
class Job:
    id: strawberry.ID
    state: JobState
    function_name: str | None
    params: JSON | None
    user_data: str | None
    result: JobResult | None
    fetched_at: datetime


# Built once: the resolver returns this very object, as a cache that hands out snapshots would.
# The timestamp has microseconds, as the gateway's does, so both answers have the same length.
JOB = Job(
    id=strawberry.ID(JOB_ID),
    state=JobState.SUCCESS,
    function_name="ImageCartoonize",
    params=cast(JSON, {"mode": "gif"}),  # JSON is typed as a NewType of object
    user_data=None,
    result=JobResult(
        code="Success",
        succeeded=True,
        files=[
            ResultFile(name=name, content_type="image/jpeg", url=_FILES_BASE + name)
            for name in ("test-result.jpg", "test-origin.jpg")
        ],
    ),
    fetched_at=datetime(2024, 5, 20, 8, 30, 15, 123456, tzinfo=UTC),
)


@strawberry.type
class Query:
    # Async like the gateway's resolver (which may wait for the upstream): both then take
    # graphql-core's async execution path, and the comparison is about what the gateway adds.
    @strawberry.field
    async def job(self, id: strawberry.ID) -> Job | None:
        return JOB if id == JOB_ID else None


def create_app() -> Starlette:
    schema = strawberry.Schema(
        query=Query,
        extensions=[
            lambda: ParserCache(maxsize=1024),
            lambda: ValidationCache(maxsize=1024),
        ],
    )
    # GraphQL() defaults to serving GraphiQL to browsers, as the gateway does by default.
    graphql = GraphQL[None, None](schema)
    return Starlette(routes=[Route("/graphql", graphql, methods=["GET", "POST"])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the bare Strawberry baseline app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--log-level", default="info", help="as the gateway passes GatewaySettings.log_level"
    )
    args = parser.parse_args(argv)
    # As `gateway/__main__.py` configures logging (uvicorn's own loggers do not propagate to the
    # root, so this changes no per-request cost; it is here to leave no difference at all).
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The very call of gateway/__main__.py `run_gateway`: uvicorn's defaults otherwise (loop and
    # http "auto", so uvloop and httptools; access log on at "info").
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
