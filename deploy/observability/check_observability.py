#!/usr/bin/env python3
"""Consistency checks for deploy/observability against docs/operations.md.

Usage (from the repository root):
    python3 deploy/observability/check_observability.py            # check
    python3 deploy/observability/check_observability.py --selftest # prove it can fail

Checks:
  * prometheus-rules.yaml is a monitoring.coreos.com/v1 PrometheusRule holding exactly
    the expected alerts, each with expr, severity (critical|warning|info), summary,
    description and a runbook_url `docs/operations.md#<anchor>` whose anchor is a
    heading of docs/operations.md;
  * grafana-dashboard.json parses, every non-row panel has a query;
  * every portico_* metric named in the rules or the dashboard is a metric the
    services export (histograms as <name>_bucket).
Needs Python 3.11+ and PyYAML. PromQL syntax itself is not parsed here.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/observability/prometheus-rules.yaml"
DASHBOARD = ROOT / "deploy/observability/grafana-dashboard.json"
DOCS = ROOT / "docs/operations.md"

EXPECTED_ALERTS = {
    "GatewayHighErrorRate", "GatewayHighLatency", "DeliveryFailureRateHigh",
    "DeliveriesExhausted", "WebhookEndpointDisabled", "QueueBacklogGrowing",
    "JobsRedeliveredOften", "OutboxStuck", "BatchStalled", "UsageLogDropping", "ServiceDown",
    "DeliverySuccessBudgetBurnFast", "DeliverySuccessBudgetBurnSlow",
    "DeliveryLatencyBudgetBurnFast", "DeliveryLatencyBudgetBurnSlow",
}
SEVERITIES = {"critical", "warning", "info"}

# The metrics the services export (fixed names).
COUNTERS_AND_GAUGES = {
    "portico_http_requests_total", "portico_grpc_requests_total", "portico_deliveries_total",
    "portico_jobs_total", "portico_jobs_redelivered_total", "portico_queue_pending",
    "portico_outbox_pending", "portico_outbox_oldest_age_seconds",
    "portico_webhook_endpoints_disabled_total", "portico_batch_orders_total",
    "portico_batches_in_progress", "portico_credential_verifications_total",
    "portico_usage_log_dropped_total", "portico_usage_log_buffer_len",
}
HISTOGRAMS = {
    "portico_http_request_duration_seconds", "portico_grpc_request_duration_seconds",
    "portico_delivery_attempt_duration_seconds", "portico_event_to_delivery_seconds",
}
KNOWN_SERIES = COUNTERS_AND_GAUGES | {
    f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")
}
METRIC_RE = re.compile(r"\bportico_[a-z0-9_]+\b")


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_fence:
            text = re.sub(r"[`*_\[\]()]", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
        for a in re.findall(r'<a\s+(?:id|name)="([^"]+)"', line):
            anchors.add(a)
    return anchors


def check(rules: dict, dashboard: dict, docs: str) -> list[str]:
    out: list[str] = []
    anchors = github_anchors(docs)

    if rules.get("apiVersion") != "monitoring.coreos.com/v1" or rules.get("kind") != "PrometheusRule":
        out.append("prometheus-rules.yaml: not a monitoring.coreos.com/v1 PrometheusRule")
    seen: list[str] = []
    exprs: list[str] = []
    for group in (rules.get("spec") or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            name = rule.get("alert")
            if not name:
                continue
            seen.append(name)
            if not str(rule.get("expr") or "").strip():
                out.append(f"{name}: no expr")
            exprs.append(str(rule.get("expr") or ""))
            sev = (rule.get("labels") or {}).get("severity")
            if sev not in SEVERITIES:
                out.append(f"{name}: severity {sev!r} not in {sorted(SEVERITIES)}")
            ann = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    out.append(f"{name}: missing annotation {key}")
            url = ann.get("runbook_url") or ""
            m = re.fullmatch(r"(?:.*/)?docs/operations\.md#([\w\-]+)", url)
            if url and not m:
                out.append(f"{name}: runbook_url {url!r} does not point to docs/operations.md#<anchor>")
            elif m and m.group(1) not in anchors:
                out.append(f"{name}: runbook anchor #{m.group(1)} is not a heading of docs/operations.md")
    missing = EXPECTED_ALERTS - set(seen)
    extra = set(seen) - EXPECTED_ALERTS
    dupes = {n for n in seen if seen.count(n) > 1}
    if missing:
        out.append(f"alerts missing: {sorted(missing)}")
    if extra:
        out.append(f"unexpected alerts (add them to EXPECTED_ALERTS and the runbook): {sorted(extra)}")
    if dupes:
        out.append(f"duplicate alerts: {sorted(dupes)}")

    panels = dashboard.get("panels") or []
    if not panels:
        out.append("grafana-dashboard.json: no panels")
    for p in panels:
        if p.get("type") == "row":
            continue
        targets = [t for t in p.get("targets") or [] if str(t.get("expr") or "").strip()]
        if not targets:
            out.append(f"dashboard panel {p.get('title')!r}: no query")
        exprs += [t["expr"] for t in targets]

    for expr in exprs:
        for metric in METRIC_RE.findall(expr):
            if metric not in KNOWN_SERIES:
                out.append(f"unknown metric {metric!r} in: {' '.join(expr.split())[:120]}")
    return out


def load() -> tuple[dict, dict, str]:
    return (
        yaml.safe_load(RULES.read_text(encoding="utf-8")),
        json.loads(DASHBOARD.read_text(encoding="utf-8")),
        DOCS.read_text(encoding="utf-8"),
    )


def selftest() -> int:
    rules, dashboard, docs = load()
    bad_rules = copy.deepcopy(rules)
    first = bad_rules["spec"]["groups"][0]["rules"][0]
    del first["annotations"]["runbook_url"]
    first["labels"]["severity"] = "page-someone"
    bad_rules["spec"]["groups"][0]["rules"][1]["annotations"]["runbook_url"] = "docs/operations.md#no-such-anchor"
    bad_rules["spec"]["groups"][-1]["rules"].pop()
    bad_dash = copy.deepcopy(dashboard)
    bad_dash["panels"].append({"type": "timeseries", "title": "typo",
                               "targets": [{"expr": "rate(portico_delivries_total[5m])"}]})
    found = check(bad_rules, bad_dash, docs)
    expected = ["missing annotation runbook_url", "severity 'page-someone'",
                "#no-such-anchor is not a heading", "alerts missing", "unknown metric 'portico_delivries_total'"]
    failures = [e for e in expected if not any(e in f for f in found)]
    clean = check(rules, dashboard, docs)
    if failures or clean:
        print("check_observability selftest FAILED", *(f"not reported: {e}" for e in failures),
              *(f"real files not clean: {c}" for c in clean), sep="\n  ", file=sys.stderr)
        return 1
    print(f"check_observability selftest ok: broken copies gave {len(found)} violations")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--selftest"]:
        return selftest()
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        violations = check(*load())
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"check_observability: {e}", file=sys.stderr)
        return 2
    if violations:
        print(f"check_observability: {len(violations)} violation(s):", *violations, sep="\n  - ", file=sys.stderr)
        return 1
    print(f"check_observability: ok ({len(EXPECTED_ALERTS)} alerts with runbooks, dashboard metrics known)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
