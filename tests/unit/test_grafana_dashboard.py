"""contrib/grafana-bms.json: a Grafana dashboard whose every PromQL
expression names only metrics bms exports, with labels they have — checked
against the exposition text bmslib.metrics renders for real (a Recorder in
its own registry, one value of each kind) — and that shows every metric."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bmslib.metrics import Recorder

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana-bms.json"
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus, not by bms
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, as rendered by bms's recorder."""
    registry = CollectorRegistry()
    r = Recorder(registry)
    r.decision("reject", "zombie PC")
    r.callback("eom", 0.01)
    r.connection_opened()
    r.dns_query(0.002, "answer", "TXT")
    r.cbv_session(0.3, "accepted", "probe")
    r.reload(True)
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def expressions(node: Any) -> Iterator[str]:
    """Every ``expr`` of the dashboard (panel targets, nested rows too)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or labels)."""
    e = without_strings(expr)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range durations, $__rate_interval
    e = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", e)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    return {name for name in re.findall(r"(?<![\w$.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", e)
            if name.lower() not in KEYWORDS}


def label_names(expr: str) -> set[str]:
    """Labels named in ``by (...)`` lists and ``{label=...}`` matchers."""
    names: set[str] = set()
    expr = without_strings(expr)
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        names.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_the_extractor_finds_names_and_skips_the_rest() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, callback) (rate(bms_x_bucket{a="b{c}",'
            'instance=~"$instance"}[$__rate_interval]))) / on (job) bms_y_total offset 5m')
    assert metric_names(expr) == {"bms_x_bucket", "bms_y_total"}
    assert label_names(expr) == {"le", "callback", "a", "instance"}


def test_every_expression_names_exported_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    found = exported()
    exprs = list(expressions(dashboard))
    assert len(exprs) >= 10, exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        unknown = names - set(found)
        assert not unknown, (expr, unknown, sorted(found))
        labels = set().union(*(found[n] for n in names)) | SCRAPE_LABELS
        assert label_names(expr) <= labels, (expr, label_names(expr) - labels)


def test_every_exported_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for e in expressions(dashboard)))
    families = {name.removesuffix(suffix) for name in exported()
                for suffix in ("_bucket", "_count", "_sum", "_total", "_created", "")
                if name.endswith(suffix)}
    shown = {name for name in families if any(u.startswith(name) for u in used)}
    assert {"bms_messages", "bms_callback_duration_seconds", "bms_active_connections",
            "bms_connections", "bms_dns_query_duration_seconds", "bms_cbv_duration_seconds",
            "bms_config_reloads"} <= shown, shown


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "bms-milter" and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    query = variables["instance"]["query"]["query"]
    metric = re.fullmatch(r"label_values\((\w+), instance\)", query)
    assert metric is not None and metric.group(1) in exported(), query
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
            assert all('instance=~"$instance"' in t["expr"] for t in p["targets"]), p["title"]
