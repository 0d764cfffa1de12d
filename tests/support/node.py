"""Frontend clients from npm (Apollo Client, graphql-ws, graphql-sse, graphql-http), run by Node.js
against a gateway the test started.

The packages are pinned in `tests/js/package.json` and its lockfile; `./scripts/test` installs
them with `npm ci`. A script in `tests/js/` takes its arguments from the command line, prints one
JSON document on stdout (what the client saw) and exits 0; the test then asserts on that
document, so the assertions stay in Python next to the server they are about.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

JS_DIR = Path(__file__).resolve().parents[1] / "js"

#: A safety bound only a hang reaches: a script that runs longer is killed and the test fails.
SCRIPT_TIMEOUT = 120.0


class NodeScriptFailed(AssertionError):
    """The script exited with an error, or did not print one JSON document."""


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeScriptFailed(
            "node is not on the PATH: install Node.js 20+ to run the npm client tests"
        )
    if not (JS_DIR / "node_modules").is_dir():
        raise NodeScriptFailed(f"run `npm ci --prefix {JS_DIR}` first (./scripts/test does it)")
    return node


def run_node(
    script: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = SCRIPT_TIMEOUT,
) -> object:
    """Runs `tests/js/<script>` with `args` and returns the JSON it printed."""
    completed = subprocess.run(
        [node_executable(), str(JS_DIR / script), *args],
        cwd=JS_DIR,
        env={**_base_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise NodeScriptFailed(
            f"{script} exited with {completed.returncode}\n"
            f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
        )
    try:
        return json.loads(completed.stdout)
    except json.JSONDecodeError as error:
        raise NodeScriptFailed(
            f"{script} did not print one JSON document ({error})\n"
            f"stdout:\n{completed.stdout[-4000:]}"
        ) from error


def _base_environment() -> dict[str, str]:
    import os

    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "NO_COLOR": "1",
    }
