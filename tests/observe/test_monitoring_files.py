"""deploy/: the Prometheus rules are rules, and every metric the rules and the Grafana dashboard
read is one a real gateway exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.conftest import GatewayServer
from tests.observe.scrape import sample_names, scrape

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mps-gateway.json"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAME = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*+(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left of it once strings, label
    matchers, ranges, grouping label lists and function names are taken out."""
    bare = _STRING.sub('""', expr)
    bare = _MATCHERS.sub("", bare)
    bare = _RANGES.sub("", bare)
    bare = _LABEL_LISTS.sub("", bare)
    return {name for name in _NAME.findall(bare) if name.lower() not in _KEYWORDS}


def test_the_name_reader_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, action) (rate(mpsgw_a_bucket{x="y{z}"}[5m]))) '
        "/ on (action) group_left max(mpsgw_b) > 1e-3 and mpsgw_c offset 5m"
    )
    assert metric_names(expr) == {"mpsgw_a_bucket", "mpsgw_b", "mpsgw_c"}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert isinstance(document, dict)
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}, group
        assert isinstance(group["name"], str)
        assert group["rules"]
        for rule in group["rules"]:
            kind = {"alert", "record"} & set(rule)
            assert len(kind) == 1, rule
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "for" in rule:
                assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["for"]
            for key in ("labels", "annotations"):
                assert all(
                    isinstance(name, str) and isinstance(text, str)
                    for name, text in rule.get(key, {}).items()
                ), rule
            found.append(rule)
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            expressions.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query["query"]))
    return expressions


def test_the_rules_alert_on_what_operators_asked_for() -> None:
    names = {rule["alert"] for rule in rules()}
    assert names == {
        "MpsGatewayBudgetNearLimit",
        "MpsGatewayBudgetExhausted",
        "MpsGatewayUpstreamThrottling",
        "MpsGatewayFailoverActive",
        "MpsGatewayErrorRatio",
        "MpsGatewayUpstreamAuthFailed",
    }


@pytest.mark.parametrize("source", ["rules", "dashboard"], ids=["alerts.yml", "mps-gateway.json"])
def test_every_metric_used_is_exposed(source: str, gateway: GatewayServer) -> None:
    expressions = (
        [rule["expr"] for rule in rules()] if source == "rules" else dashboard_expressions()
    )
    used = set().union(*(metric_names(expr) for expr in expressions))
    exposed = sample_names(scrape(gateway.url))

    assert used, "no expression read"
    assert used - exposed == set()
