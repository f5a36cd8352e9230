#!/usr/bin/env python3
"""Consistency checks for deploy/observability against the Rust sources and docs/operations.md.

Usage (from anywhere):
    python3 deploy/observability/check_observability.py            # check
    python3 deploy/observability/check_observability.py --list     # print the exported series
    python3 deploy/observability/check_observability.py --selftest # prove it can fail

Checks:
  * prometheus-rules.yaml is a monitoring.coreos.com/v1 PrometheusRule holding exactly
    the expected alerts, each with expr, severity (critical|warning|info), summary,
    description and a runbook_url `docs/operations.md#<anchor>` whose anchor is a
    heading of docs/operations.md;
  * grafana-dashboard.json parses, every non-row panel has a query;
  * every metric named in the rules' expressions, the dashboard's queries and template
    variables, and the unit tests' input series is one the services export, a series
    the rules record, or Prometheus' own `up`; every label a selector of a Portico
    metric matches on is one the services attach (or a scrape target label);
  * every alert has promtool unit tests (tests/*_test.yaml) in which it fires and in
    which it stays quiet, and no test names an alert that does not exist.

What the services export is read from the Rust sources under services/ and shared/:
every `counter!`, `gauge!` and `histogram!` call of the `metrics` crate, its name (a
string literal or a `const NAME: &str = "..."`) and its label keys (`"key" => value`).
metrics-exporter-prometheus writes names as given (no `_total` or unit suffix added:
the recorder is built without `with_recommended_naming`), a histogram as
`_bucket{le}`/`_sum`/`_count` when buckets are configured for it
(`set_buckets_for_metric(Matcher::...)` or `set_buckets`), else as a summary
(`{quantile}`, `_sum`, `_count`).

Needs Python 3.11+ and PyYAML. PromQL is tokenized here, not fully parsed; promtool
checks its syntax (deploy/observability/test_alerts.sh).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy/observability"
RULES = OBS / "prometheus-rules.yaml"
DASHBOARD = OBS / "grafana-dashboard.json"
TESTS_DIR = OBS / "tests"
DOCS = ROOT / "docs/operations.md"
RUST_DIRS = [ROOT / "services", ROOT / "shared"]

EXPECTED_ALERTS = {
    "GatewayHighErrorRate", "GatewayHighLatency", "DeliveryFailureRateHigh",
    "DeliveriesExhausted", "WebhookEndpointDisabled", "QueueBacklogGrowing",
    "QueueConsumerAheadOfStream",
    "JobsRedeliveredOften", "OutboxStuck", "DeadLettersPresent", "BatchStalled",
    "UsageLogDropping", "CredentialGuessing", "ServiceDown",
    "DeliverySuccessBudgetBurnFast", "DeliverySuccessBudgetBurnSlow",
    "DeliveryLatencyBudgetBurnFast", "DeliveryLatencyBudgetBurnSlow",
}
SEVERITIES = {"critical", "warning", "info"}

# Series that Prometheus itself makes for every target.
PROMETHEUS_SERIES = {"up"}
# Labels the scrape adds to every series (PodMonitor, or the usual annotation-based
# kubernetes-pods job).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint", "node"}


# --- what the services export ------------------------------------------------------------

@dataclass
class Exports:
    """Series name -> label names it carries (None: not known statically)."""

    series: dict[str, set[str] | None] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, labels: set[str] | None, where: str) -> None:
        if name in self.series:
            old = self.series[name]
            self.series[name] = None if old is None or labels is None else old | labels
        else:
            self.series[name] = None if labels is None else set(labels)
            self.origin[name] = where


MACRO_RE = re.compile(r"(?<![\w:])(?:metrics::)?(counter|gauge|histogram)!\s*\(")
CONST_RE = re.compile(r"\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:'static\s+)?str\s*=\s*\"([^\"]+)\"\s*;")
BUCKETS_RE = re.compile(r"set_buckets_for_metric\(\s*Matcher::(Full|Prefix|Suffix)\(\s*\"([^\"]+)\"")
GLOBAL_BUCKETS_RE = re.compile(r"\.set_buckets\(")
LABEL_ARG_RE = re.compile(r'^"([A-Za-z_][A-Za-z0-9_]*)"\s*=>', re.S)
STRING_RE = re.compile(r'^"([^"\\]*)"$')
PATH_RE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*::)*([A-Z][A-Z0-9_]*)$")


def strip_line_comments(src: str) -> str:
    """Drops `//` comment lines (doc comments may show macro calls); keeps line numbers."""
    return "\n".join("" if line.lstrip().startswith("//") else line for line in src.splitlines())


def macro_args(src: str, start: int) -> str | None:
    """The text between the parenthesis at src[start-1] and its match."""
    depth, i, in_str = 1, start, False
    while i < len(src):
        c = src[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return src[start:i]
        i += 1
    return None


def split_top_level(args: str) -> list[str]:
    parts, depth, cur, in_str, i = [], 0, [], False, 0
    while i < len(args):
        c = args[i]
        if in_str:
            cur.append(c)
            if c == "\\" and i + 1 < len(args):
                cur.append(args[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            cur.append(c)
        elif c in "([{":
            depth += 1
            cur.append(c)
        elif c in ")]}":
            depth -= 1
            cur.append(c)
        elif c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def exports_from_sources(sources: dict[str, str]) -> Exports:
    """sources: path -> Rust source text."""
    exp = Exports()
    consts: dict[str, set[str]] = {}
    bucket_matchers: list[tuple[str, str]] = []
    global_buckets = False
    calls: list[tuple[str, str, str, set[str] | None]] = []  # kind, name expr, where, labels
    for path, raw in sorted(sources.items()):
        src = strip_line_comments(raw)
        for m in CONST_RE.finditer(src):
            consts.setdefault(m.group(1), set()).add(m.group(2))
        bucket_matchers += BUCKETS_RE.findall(src)
        global_buckets |= bool(GLOBAL_BUCKETS_RE.search(src))
        if "with_recommended_naming" in src or "counter_suffix" in src:
            exp.warnings.append(
                f"{path}: the exporter's naming is configured (with_recommended_naming); "
                "teach check_observability.py the suffixes it adds")
        for m in MACRO_RE.finditer(src):
            args = macro_args(src, m.end())
            where = f"{path}:{src.count(chr(10), 0, m.start()) + 1}"
            if args is None:
                exp.warnings.append(f"{where}: unbalanced {m.group(1)}! call")
                continue
            parts = split_top_level(args)
            if not parts:
                continue
            rest = parts[1:]
            labels: set[str] | None = set()
            for arg in rest:
                lm = LABEL_ARG_RE.match(arg)
                if lm:
                    labels.add(lm.group(1))
                else:
                    labels = None  # a label list built at run time
                    break
            calls.append((m.group(1), parts[0], where, labels))
    for kind, name_expr, where, labels in calls:
        names: set[str] = set()
        if sm := STRING_RE.match(name_expr):
            names = {sm.group(1)}
        elif pm := PATH_RE.match(name_expr):
            names = consts.get(pm.group(1), set())
        if not names:
            exp.warnings.append(f"{where}: cannot resolve the metric name {name_expr!r} of a {kind}! call")
            continue
        for name in names:
            if kind != "histogram":
                exp.add(name, labels, where)
                continue
            bucketed = global_buckets or any(
                (how == "Full" and name == s) or (how == "Prefix" and name.startswith(s))
                or (how == "Suffix" and name.endswith(s))
                for how, s in bucket_matchers)
            extra = {"le"} if bucketed else {"quantile"}
            exp.add(f"{name}_bucket" if bucketed else name,
                    None if labels is None else labels | extra, where)
            exp.add(f"{name}_sum", labels, where)
            exp.add(f"{name}_count", labels, where)
    return exp


def read_sources() -> dict[str, str]:
    out = {}
    for d in RUST_DIRS:
        for p in d.rglob("*.rs"):
            if "target" in p.relative_to(ROOT).parts:
                continue
            out[str(p.relative_to(ROOT))] = p.read_text(encoding="utf-8", errors="replace")
    return out


# --- PromQL selectors ------------------------------------------------------------------

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "start", "end",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<lbrace>\{)
  | (?P<range>\[[^\]]*\])
  | (?P<other>.)
""", re.X | re.S)
MATCHER_RE = re.compile(
    r"""\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*|"(?:\\.|[^"\\])*")\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?P<value>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)\s*(?:,|(?=\}))""", re.S)


@dataclass
class Selector:
    metric: str | None
    labels: list[str]


class PromQLError(ValueError):
    pass


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in expr: its metric name (None if matched by regex only) and
    the label names its matchers use. Grafana variables ($x, ${x}, [[x]]) are skipped."""
    toks = [(m.lastgroup, m.group(), m.end()) for m in TOKEN_RE.finditer(expr)]
    out: list[Selector] = []
    i = 0

    def next_sig(j: int) -> int:
        while j < len(toks) and toks[j][0] in ("ws", "comment"):
            j += 1
        return j

    def read_matchers(j: int) -> tuple[list[tuple[str, str, str]], int]:
        # toks[j] is "{"; parse from the raw text after it
        pos = toks[j][2]
        found = []
        while True:
            rest = expr[pos:]
            if rest.lstrip().startswith("}"):
                pos += len(rest) - len(rest.lstrip()) + 1
                break
            m = MATCHER_RE.match(expr, pos)
            if not m:
                raise PromQLError(f"cannot read label matchers at {expr[pos:pos + 40]!r}")
            label = m.group("label").strip('"')
            found.append((label, m.group("op"), m.group("value")))
            pos = m.end()
        k = j
        while k < len(toks) and toks[k][2] <= pos - 1:
            k += 1
        while k < len(toks) and toks[k][2] <= pos:
            k += 1
        return found, k

    while i < len(toks):
        kind, text, _ = toks[i]
        if kind == "ident":
            j = next_sig(i + 1)
            nxt = toks[j][1] if j < len(toks) else ""
            if text in GROUPING and nxt == "(":
                depth, j = 0, j
                while j < len(toks):
                    depth += toks[j][1] == "("
                    depth -= toks[j][1] == ")"
                    j += 1
                    if depth == 0:
                        break
                i = j
                continue
            if text in KEYWORDS or text in AGGREGATIONS or nxt == "(":
                i += 1
                continue
            if nxt == "{":
                matchers, i = read_matchers(j)
                out.append(Selector(text, [m[0] for m in matchers]))
            else:
                out.append(Selector(text, []))
                i += 1
            continue
        if kind == "lbrace":
            matchers, i = read_matchers(i)
            name = next((v.strip("\"'`") for lab, op, v in matchers if lab == "__name__" and op == "="), None)
            out.append(Selector(name, [lab for lab, _, _ in matchers if lab != "__name__"]))
            continue
        i += 1
    return out


LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(?:(?P<sel>.*),\s*)?(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.S)
QUERY_RESULT_RE = re.compile(r"^\s*query_result\((?P<q>.*)\)\s*$", re.S)


# --- the checks --------------------------------------------------------------------------

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


def dashboard_panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels or []:
        out.append(p)
        out += dashboard_panels(p.get("panels") or [])  # collapsed rows hold their panels
    return out


def check(rules: dict, dashboard: dict, docs: str, tests: dict[str, dict], exports: Exports) -> list[str]:
    out: list[str] = []
    anchors = github_anchors(docs)

    # -- rules: alerts, severities, runbooks
    if rules.get("apiVersion") != "monitoring.coreos.com/v1" or rules.get("kind") != "PrometheusRule":
        out.append("prometheus-rules.yaml: not a monitoring.coreos.com/v1 PrometheusRule")
    seen: list[str] = []
    recorded: set[str] = set()
    exprs: list[tuple[str, str]] = []  # (where, expr)
    for group in (rules.get("spec") or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            if rule.get("record"):
                recorded.add(rule["record"])
                exprs.append((f"recording rule {rule['record']}", str(rule.get("expr") or "")))
                continue
            name = rule.get("alert")
            if not name:
                continue
            seen.append(name)
            if not str(rule.get("expr") or "").strip():
                out.append(f"{name}: no expr")
            exprs.append((f"alert {name}", str(rule.get("expr") or "")))
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

    # -- dashboard
    panels = dashboard_panels(dashboard.get("panels") or [])
    if not panels:
        out.append("grafana-dashboard.json: no panels")
    for p in panels:
        if p.get("type") == "row":
            continue
        targets = [t for t in p.get("targets") or [] if str(t.get("expr") or "").strip()]
        if not targets:
            out.append(f"dashboard panel {p.get('title')!r}: no query")
        exprs += [(f"dashboard panel {p.get('title')!r}", t["expr"]) for t in targets]
    label_uses: list[tuple[str, str, str]] = []  # where, metric, label
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        where = f"dashboard variable ${var.get('name')}"
        if m := LABEL_VALUES_RE.match(str(q or "")):
            if m.group("sel"):
                exprs.append((where, m.group("sel")))
                for s in selectors(m.group("sel")):
                    if s.metric:
                        label_uses.append((where, s.metric, m.group("label")))
        elif m := QUERY_RESULT_RE.match(str(q or "")):
            exprs.append((where, m.group("q")))

    # -- unit tests: every alert fires somewhere and stays quiet somewhere
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for fname, doc in sorted(tests.items()):
        if (doc or {}).get("rule_files") != ["rules.yaml"]:
            out.append(f"tests/{fname}: rule_files must be [rules.yaml] (test_alerts.sh writes it)")
        for t in (doc or {}).get("tests") or []:
            tname = t.get("name") or "?"
            for s in t.get("input_series") or []:
                exprs.append((f"tests/{fname} {tname!r} input series", str(s.get("series") or "")))
            for case in t.get("alert_rule_test") or []:
                a = case.get("alertname")
                if a not in seen:
                    out.append(f"tests/{fname} {tname!r}: alert {a!r} does not exist")
                    continue
                bucket = fires if case.get("exp_alerts") else quiet
                bucket[a] = bucket.get(a, 0) + 1
    for a in sorted(set(seen)):
        if not fires.get(a):
            out.append(f"{a}: no unit test in which it fires (tests/*_test.yaml)")
        if not quiet.get(a):
            out.append(f"{a}: no unit test in which it stays quiet (tests/*_test.yaml)")

    # -- every metric and label is exported
    known = set(exports.series) | recorded | PROMETHEUS_SERIES
    for where, expr in exprs:
        short = " ".join(expr.split())[:100]
        try:
            sels = selectors(expr)
        except PromQLError as e:
            out.append(f"{where}: {e}")
            continue
        for s in sels:
            if s.metric is None:
                continue
            if s.metric not in known:
                out.append(f"{where}: unknown metric {s.metric!r} (not exported by the services) in: {short}")
                continue
            label_uses += [(where, s.metric, lab) for lab in s.labels]
    for where, metric, label in label_uses:
        allowed = exports.series.get(metric)
        if metric not in exports.series or allowed is None:
            continue  # Prometheus' own, recorded, or labels built at run time
        if label not in allowed | TARGET_LABELS:
            out.append(f"{where}: {metric} has no label {label!r} (the services attach {sorted(allowed)})")
    return out


def load_tests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(TESTS_DIR.glob("*_test.yaml"))}


def load() -> tuple[dict, dict, str, dict[str, dict], Exports]:
    return (
        yaml.safe_load(RULES.read_text(encoding="utf-8")),
        json.loads(DASHBOARD.read_text(encoding="utf-8")),
        DOCS.read_text(encoding="utf-8"),
        load_tests(),
        exports_from_sources(read_sources()),
    )


# --- self-test ---------------------------------------------------------------------------

def selftest() -> int:
    failures: list[str] = []

    # The source reader: names from literals and consts, labels, histograms as the
    # exporter writes them, run-time label lists, doc comments ignored.
    demo = exports_from_sources({
        "names.rs": 'pub const DEMO_SECONDS: &str = "demo_seconds";\n'
                    'pub const DEMO_SIZE: &str = "demo_size";\n'
                    'let b = PrometheusBuilder::new()\n'
                    '    .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &[1.0])?;\n',
        "use.rs": 'metrics::counter!("demo_total", "outcome" => o.as_str(), "class" => c)\n'
                  '    .increment(1);\n'
                  'metrics::histogram!(names::DEMO_SECONDS, "route" => r).record(1.0);\n'
                  'histogram!(DEMO_SIZE).record(1.0);\n'
                  'metrics::gauge!("demo_dynamic", &labels).set(1.0);\n'
                  '/// metrics::counter!("demo_in_a_comment").increment(1);\n'
                  'metrics::counter!(name_from_a_variable).increment(1);\n',
    })
    expected = {
        "demo_total": {"outcome", "class"},
        "demo_seconds_bucket": {"route", "le"}, "demo_seconds_sum": {"route"}, "demo_seconds_count": {"route"},
        "demo_size": {"quantile"}, "demo_size_sum": set(), "demo_size_count": set(),
        "demo_dynamic": None,
    }
    if demo.series != expected:
        failures.append(f"source reader: got {demo.series}, expected {expected}")
    if not any("name_from_a_variable" in w for w in demo.warnings):
        failures.append("source reader: no warning for a metric name it cannot resolve")

    # The PromQL reader.
    got = [(s.metric, s.labels) for s in selectors(
        'sum by (le, route) (rate(a_bucket{service=~"$service", le=~"10(\\\\.0)?"}[$__rate_interval]))'
        ' / on() group_left sum(b offset 5m) > bool 2 * vector(0) or {__name__="c", x="y"}'
        ' unless max without (pod) (d:recorded:ratio[5m] @ end())')]
    want = [("a_bucket", ["service", "le"]), ("b", []), ("c", ["x"]), ("d:recorded:ratio", [])]
    if got != want:
        failures.append(f"PromQL reader: got {got}, expected {want}")

    # The real files pass ...
    rules, dashboard, docs, tests, exports = load()
    clean = check(rules, dashboard, docs, tests, exports)
    failures += [f"real files not clean: {c}" for c in clean]

    # ... and broken copies of them fail, each for its own reason.
    bad_rules = copy.deepcopy(rules)
    groups = bad_rules["spec"]["groups"]
    first = groups[0]["rules"][0]
    del first["annotations"]["runbook_url"]
    first["labels"]["severity"] = "page-someone"
    groups[0]["rules"][1]["annotations"]["runbook_url"] = "docs/operations.md#no-such-anchor"
    groups[-1]["rules"].pop()
    for g in groups:
        for r in g["rules"]:
            if r.get("alert") == "DeliveriesExhausted":
                r["expr"] = 'sum(increase(portico_deliveries_total{status="5xx"}[30m])) > 10'
            if r.get("alert") == "OutboxStuck":
                r["expr"] = "max(portico_outbox_age_seconds) > 60"
    bad_dash = copy.deepcopy(dashboard)
    bad_dash["panels"].append({"type": "timeseries", "title": "typo",
                               "targets": [{"expr": "rate(portico_delivries_total[5m])"}]})
    bad_dash.setdefault("templating", {}).setdefault("list", []).append(
        {"name": "route", "type": "query", "query": "label_values(portico_http_requests_total, path)"})
    bad_tests = copy.deepcopy(tests)
    quiet_case_removed = False
    for doc in bad_tests.values():
        for t in doc["tests"]:
            keep = []
            for case in t.get("alert_rule_test") or []:
                if case["alertname"] == "UsageLogDropping":
                    continue  # no test of UsageLogDropping at all
                if case["alertname"] == "OutboxStuck" and not case.get("exp_alerts"):
                    quiet_case_removed = True
                    continue  # OutboxStuck never shown quiet
                keep.append(case)
            if "alert_rule_test" in t:
                t["alert_rule_test"] = keep
    any_test = next(iter(bad_tests.values()))["tests"][0]
    any_test.setdefault("alert_rule_test", []).append(
        {"eval_time": "1m", "alertname": "GatewayHighErorRate", "exp_alerts": []})
    any_test["input_series"].append({"series": 'portico_deliveries_total{outcome="failed", code="500"}',
                                     "values": "0+1x10"})
    # The services stop exporting a metric the dashboard and an alert use.
    bad_exports = copy.deepcopy(exports)
    for s in ("portico_usage_log_buffer_len",):
        bad_exports.series.pop(s, None)

    found = check(bad_rules, bad_dash, docs, bad_tests, bad_exports)
    expected_msgs = [
        "missing annotation runbook_url", "severity 'page-someone'", "#no-such-anchor is not a heading",
        "alerts missing", "unknown metric 'portico_delivries_total'", "unknown metric 'portico_outbox_age_seconds'",
        "portico_deliveries_total has no label 'status'", "portico_http_requests_total has no label 'path'",
        "portico_deliveries_total has no label 'code'", "alert 'GatewayHighErorRate' does not exist",
        "UsageLogDropping: no unit test in which it fires", "UsageLogDropping: no unit test in which it stays quiet",
        "unknown metric 'portico_usage_log_buffer_len'",
    ]
    if quiet_case_removed:
        expected_msgs.append("OutboxStuck: no unit test in which it stays quiet")
    failures += [f"not reported: {e}" for e in expected_msgs if not any(e in f for f in found)]

    if failures:
        print("check_observability selftest FAILED", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print(f"check_observability selftest ok: broken copies gave {len(found)} violations, "
          f"each expected one among them")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--selftest"]:
        return selftest()
    if argv == ["--list"]:
        exports = exports_from_sources(read_sources())
        for name in sorted(exports.series):
            labels = exports.series[name]
            print(f"{name} {{{', '.join(sorted(labels)) if labels is not None else '...'}}}  {exports.origin[name]}")
        print(*exports.warnings, sep="\n", file=sys.stderr)
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        rules, dashboard, docs, tests, exports = load()
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"check_observability: {e}", file=sys.stderr)
        return 2
    for w in exports.warnings:
        print(f"check_observability: warning: {w}", file=sys.stderr)
    violations = check(rules, dashboard, docs, tests, exports)
    if violations:
        print(f"check_observability: {len(violations)} violation(s):", *violations, sep="\n  - ", file=sys.stderr)
        return 1
    print(f"check_observability: ok ({len(EXPECTED_ALERTS)} alerts with runbooks and unit tests; "
          f"every metric and label in rules, dashboard and tests is one of the "
          f"{len(exports.series)} series the services export)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
