#!/usr/bin/env python3
"""Turns the PrometheusRule manifest into a plain Prometheus rules file for promtool.

promtool reads rule files (`groups:` at the top), not Kubernetes objects; the rules
Portico ships are the `spec` of deploy/observability/prometheus-rules.yaml. Used by
deploy/observability/test_alerts.sh.

Usage:
    promtool_rules.py extract MANIFEST OUT [--mutate never|always]
        write MANIFEST's spec to OUT. --mutate rewrites every alert's expr, for the
        negative controls: `never` makes each alert unable to fire (vector(1) < 0),
        `always` makes it fire on any data (vector(1)); recording rules are left out
        (nothing reads them then, and they are the slow part of a test run).
    promtool_rules.py alerts MANIFEST
        print the alert names, one a line.
Needs PyYAML.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

MUTATIONS = {"never": "vector(1) < 0", "always": "vector(1)"}


def load_spec(manifest: Path) -> dict:
    doc = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("kind") != "PrometheusRule":
        raise ValueError(f"{manifest}: not a PrometheusRule")
    spec = doc.get("spec") or {}
    if not spec.get("groups"):
        raise ValueError(f"{manifest}: spec.groups is empty")
    return spec


def alerts(spec: dict) -> list[str]:
    return [r["alert"] for g in spec["groups"] for r in g.get("rules") or [] if r.get("alert")]


def extract(manifest: Path, out: Path, mutate: str | None) -> None:
    spec = load_spec(manifest)
    if mutate:
        groups = []
        for group in spec["groups"]:
            rules = [dict(r, expr=MUTATIONS[mutate]) for r in group.get("rules") or [] if r.get("alert")]
            if rules:
                groups.append(dict(group, rules=rules))
        spec["groups"] = groups
    out.write_text(
        "# Generated from the spec of " + manifest.name + "; do not edit.\n"
        + yaml.safe_dump({"groups": spec["groups"]}, sort_keys=False, width=200),
        encoding="utf-8",
    )


def main(argv: list[str]) -> int:
    try:
        if len(argv) in (3, 5) and argv[0] == "extract":
            mutate = None
            if len(argv) == 5:
                if argv[3] != "--mutate" or argv[4] not in MUTATIONS:
                    raise SystemExit(__doc__)
                mutate = argv[4]
            extract(Path(argv[1]), Path(argv[2]), mutate)
            return 0
        if len(argv) == 2 and argv[0] == "alerts":
            print("\n".join(alerts(load_spec(Path(argv[1])))))
            return 0
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"promtool_rules: {e}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
