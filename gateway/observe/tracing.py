"""Whether the gateway traces, decided once from the standard OTEL_* variables.

Tracing needs the `otel` extra (`pip install 'mps-gateway[otel]'`) and is off unless the
environment names an exporter: `OTEL_TRACES_EXPORTER` (`otlp`, `console`, a comma-separated
list; `none` turns it off), or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), which means `otlp`; `OTEL_SDK_DISABLED=true` wins over
both. Everything else (the endpoint, headers, sampler, service name, batching) is the
OpenTelemetry SDK's own reading of its variables. Without the extra the gateway never fails:
when the variables ask for traces it says once that it cannot make them.

These are the SDK's variables, not the gateway's: they are read here, where the SDK reads
them, and not in `gateway.settings`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.observe.otel import Tracing

__all__ = ["exporter_names", "tracing_from_env"]

logger = logging.getLogger(__name__)


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters `environ` asks for, by their entry point names (`otlp` is OTLP over
    HTTP/protobuf, the protocol's default, unless OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL says
    grpc); none when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not listed:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        listed = "otlp" if endpoint else "none"
    names = [name.strip().lower() for name in listed.split(",") if name.strip()]
    if names == ["none"]:
        return []
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    otlp = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    return [otlp if name == "otlp" else name for name in names if name != "none"]


def tracing_from_env(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The process's tracing as the OTEL_* variables of `environ` (the process's by default)
    configure it (and the SDK's global tracer provider), or None when they ask for none, or
    when the `otel` extra is not installed (said once, as a warning)."""
    environ = os.environ if environ is None else environ
    names = exporter_names(environ)
    if not names:
        return None
    try:
        from gateway.observe.otel import Tracing
    except ImportError as exc:
        logger.warning(
            "OTEL_* variables ask for traces (%s), but OpenTelemetry is not installed (%s): no "
            "traces. Install the gateway with its otel extra: pip install 'mps-gateway[otel]'",
            ", ".join(names),
            exc.name,
        )
        return None
    return Tracing.from_exporters(names)
