"""GraphiQL's HTML page: every file it loads is the gateway's own (`graphiql/<path>`, with its
SRI hash), and its Content-Security-Policy lets the browser reach no other origin.

The page holds no inline script: what the start script needs (the query GraphiQL opens with) is a
JSON data block, which the browser never runs.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from gateway.graphiql.assets import Asset
from gateway.settings import GatewaySettings, SimulatorSettings, UpstreamKind

#: Where the page's assets are served, relative to the page (at `/graphql`, that is
#: `/graphiql/`): relative, so that a proxy serving the gateway under a path prefix keeps working.
ASSET_PREFIX = "graphiql/"

#: Nothing from another origin: scripts, styles and fetches (HTTP and WebSocket) to the gateway
#: only. GraphiQL's fonts and icons are data: URLs inside its style sheet; CodeMirror and GraphiQL
#: set style attributes, hence 'unsafe-inline' for styles (never for scripts).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
    )
)

#: GraphiQL's first tab away from the embedded simulator: what to ask, without spending an
#: upstream call on a made-up id.
NEUTRAL_QUERY = """\
# Put a job id in the variables below ({"id": "..."}), then run (Ctrl-Enter).
query Job($id: ID!) {
  job(id: $id) {
    id state functionName params userData
    result { code files { name contentType url } }
  }
}
"""


def demo_query(job_ids: Sequence[str], name: str = "") -> str:
    """A query of the embedded simulator's demo jobs `job_ids` (the start banner prints it,
    GraphiQL opens with it, named `name`)."""
    ids = ", ".join(json.dumps(job_id) for job_id in job_ids)
    return (
        f"query {name}{' ' if name else ''}{{\n"
        f"  jobs(ids: [{ids}]) {{\n"
        "    id state functionName params\n"
        "    result { code files { name contentType url } }\n"
        "  }\n"
        "}\n"
    )


def demo_subscription(job_id: str, name: str = "") -> str:
    """A subscription to the embedded simulator's moving demo job `job_id` (the start banner
    prints it, GraphiQL opens with it, named `name`)."""
    return (
        f"subscription {name}{' ' if name else ''}{{\n"
        f"  jobUpdates(id: {json.dumps(job_id)}) {{\n"
        "    id state isFinished result { code files { name url } }\n"
        "  }\n"
        "}\n"
    )


def default_query(settings: GatewaySettings) -> str:
    """What GraphiQL opens with: on the embedded simulator, a query of real demo jobs and a
    subscription to the demo job that moves (the start banner's); for any other upstream, a
    neutral query."""
    if settings.upstream_kind is not UpstreamKind.EMBEDDED_SIMULATOR:
        return NEUTRAL_QUERY
    # Imported only when embedded: a gateway on the cloud never loads the simulator.
    from gateway.simulator import demo_job_ids, moving_demo_job_id

    simulator = SimulatorSettings()
    # Named, so that either runs from the one tab (GraphiQL asks which, or takes the one under
    # the cursor); the banner prints them unnamed.
    return (
        "# The EMBEDDED MPS SIMULATOR's demo jobs, not the cloud. Run an operation with the\n"
        "# run button, or with Ctrl-Enter inside it.\n"
        + demo_query(demo_job_ids(simulator)[:3], "DemoJobs")
        + "\n# A demo job that moves (QUEUING, ANALYSING, then SUCCESS), followed over WebSocket.\n"
        + "# Each run is a new job: the start banner and /_simulator/jobs name the latest.\n"
        + demo_subscription(moving_demo_job_id(simulator.seed), "MovingDemoJob")
    )


def render_page(assets: Sequence[Asset], query: str) -> str:
    """The page: `assets` in order (style sheets, then scripts run in order once the document
    is parsed), a favicon that costs no request, and `query` for GraphiQL's first tab."""
    links = []
    for asset in assets:
        href = html.escape(ASSET_PREFIX + asset.path)
        integrity = html.escape(asset.integrity)
        if asset.is_script:
            links.append(f'<script defer src="{href}" integrity="{integrity}"></script>')
        else:
            links.append(f'<link rel="stylesheet" href="{href}" integrity="{integrity}">')
    # A data block, not a script: escaping "<" keeps "</script>" in a query from closing it.
    config = json.dumps({"defaultQuery": query}).replace("<", "\\u003c")
    head = "\n    ".join(
        [
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>mps-gateway: GraphiQL</title>",
            # No favicon request (a 404 in the console otherwise).
            '<link rel="icon" href="data:,">',
            *sorted(links, key=lambda link: link.startswith("<script")),
            f'<script id="graphiql-config" type="application/json">{config}</script>',
        ]
    )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n'
        f"  <head>\n    {head}\n  </head>\n"
        '  <body>\n    <div id="graphiql">Loading...</div>\n  </body>\n'
        "</html>\n"
    )
