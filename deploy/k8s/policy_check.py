#!/usr/bin/env python3
"""Project policy for rendered Kubernetes manifests (what schema validation cannot see).

Usage:
    kubectl kustomize deploy/k8s/overlays/prod | python3 deploy/k8s/policy_check.py -
    python3 deploy/k8s/policy_check.py rendered.yaml [more.yaml ...]
    python3 deploy/k8s/policy_check.py --selftest

Rules, for every container (and init container) of every Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job and CronJob:
  * readinessProbe and livenessProbe (Job and CronJob containers are exempt);
  * resources.requests and resources.limits for both cpu and memory;
  * security: runAsNonRoot true and a non-zero runAsUser (pod or container level),
    runAsUser 10001 for Portico's own images, readOnlyRootFilesystem true,
    allowPrivilegeEscalation false, not privileged, capabilities drop ALL and add
    nothing, seccompProfile RuntimeDefault (or Localhost);
  * image pinned: a tag other than `latest`, or a digest;
and for pods: no service account token mounted, no host namespaces.
Every port of every Service is named.

Exits 0 when clean, 1 with a list of violations, 2 on unusable input.
Needs Python 3.11+ and PyYAML (installed with yamllint).
"""

from __future__ import annotations

import sys

import yaml

PORTICO_IMAGE_PREFIX = "ghcr.io/portico/"
PORTICO_UID = 10001
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
PROBE_EXEMPT_KINDS = {"Job", "CronJob"}


def pod_spec_of(doc: dict) -> dict | None:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("spec")) or None


def image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest"


def check_container(where: str, c: dict, pod: dict, need_probes: bool) -> list[str]:
    out: list[str] = []
    name = f"{where} container {c.get('name', '?')}"

    if need_probes:
        for probe in ("readinessProbe", "livenessProbe"):
            if not c.get(probe):
                out.append(f"{name}: missing {probe}")

    res = c.get("resources") or {}
    for section in ("requests", "limits"):
        values = res.get(section) or {}
        for key in ("cpu", "memory"):
            if key not in values:
                out.append(f"{name}: missing resources.{section}.{key}")

    image = c.get("image") or ""
    if not image:
        out.append(f"{name}: no image")
    elif not image_pinned(image):
        out.append(f"{name}: image {image!r} is not pinned (needs a tag other than 'latest' or a digest)")

    psc = pod.get("securityContext") or {}
    csc = c.get("securityContext") or {}

    def effective(key: str):
        return csc[key] if key in csc else psc.get(key)

    if effective("runAsNonRoot") is not True:
        out.append(f"{name}: securityContext.runAsNonRoot must be true")
    uid = effective("runAsUser")
    if uid is None:
        out.append(f"{name}: securityContext.runAsUser must be set")
    elif uid == 0:
        out.append(f"{name}: securityContext.runAsUser must not be 0")
    elif image.startswith(PORTICO_IMAGE_PREFIX) and uid != PORTICO_UID:
        out.append(f"{name}: Portico images run as uid {PORTICO_UID}, got runAsUser {uid}")
    if csc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{name}: securityContext.readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{name}: securityContext.allowPrivilegeEscalation must be false")
    if csc.get("privileged") is True:
        out.append(f"{name}: securityContext.privileged must not be true")
    caps = csc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{name}: securityContext.capabilities.drop must contain ALL")
    if caps.get("add"):
        out.append(f"{name}: securityContext.capabilities.add must be empty")
    seccomp = (effective("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"{name}: securityContext.seccompProfile.type must be RuntimeDefault")
    return out


def check_document(doc: dict) -> list[str]:
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    where = f"{kind}/{meta.get('name', '?')}"
    out: list[str] = []

    if kind in WORKLOAD_KINDS:
        pod = pod_spec_of(doc)
        if not pod:
            return [f"{where}: no pod template"]
        if pod.get("automountServiceAccountToken") is not False:
            out.append(f"{where}: pod must set automountServiceAccountToken: false")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(host):
                out.append(f"{where}: pod must not use {host}")
        containers = pod.get("containers") or []
        if not containers:
            out.append(f"{where}: no containers")
        for c in containers:
            out += check_container(where, c, pod, need_probes=kind not in PROBE_EXEMPT_KINDS)
        for c in pod.get("initContainers") or []:
            out += check_container(where + " (init)", c, pod, need_probes=False)

    elif kind == "Service":
        for i, port in enumerate((doc.get("spec") or {}).get("ports") or []):
            if not port.get("name"):
                out.append(f"{where}: port #{i} ({port.get('port')}) has no name")

    return out


def check_stream(text: str, source: str) -> list[str]:
    violations: list[str] = []
    docs = [d for d in yaml.safe_load_all(text) if d]
    if not docs:
        raise ValueError(f"{source}: no YAML documents")
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise ValueError(f"{source}: a document is not a Kubernetes object")
        items = doc.get("items") if doc["kind"].endswith("List") else [doc]
        for item in items or []:
            violations += check_document(item)
    return violations


# --- self-test: prove that each rule can fail --------------------------------

GOOD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: good}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: good}}
  template:
    metadata: {labels: {app.kubernetes.io/name: good}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: ghcr.io/portico/portico-gateway:0.1.0
          readinessProbe: {grpc: {port: 50051}}
          livenessProbe: {httpGet: {path: /healthz, port: 8080}}
          resources: {requests: {cpu: 10m, memory: 8Mi}, limits: {cpu: 100m, memory: 64Mi}}
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: good-job}
spec:
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      containers:
        - name: migrate
          image: nats@sha256:0000000000000000000000000000000000000000000000000000000000000000
          resources: {requests: {cpu: 10m, memory: 8Mi}, limits: {cpu: 100m, memory: 64Mi}}
          securityContext:
            runAsNonRoot: true
            runAsUser: 1000
            seccompProfile: {type: RuntimeDefault}
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata: {name: good}
spec:
  ports: [{name: http, port: 8080}]
"""

BAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: bad}}
  template:
    metadata: {labels: {app.kubernetes.io/name: bad}}
    spec:
      hostNetwork: true
      containers:
        - name: app
          image: ghcr.io/portico/portico-gateway:latest
          resources: {requests: {cpu: 10m}}
          securityContext:
            runAsUser: 0
            privileged: true
            allowPrivilegeEscalation: true
            capabilities: {add: [NET_ADMIN]}
        - name: wrong-uid
          image: ghcr.io/portico/portico-batch-processor
          readinessProbe: {httpGet: {path: /readyz, port: 8080}}
          livenessProbe: {httpGet: {path: /healthz, port: 8080}}
          resources: {requests: {cpu: 10m, memory: 8Mi}, limits: {cpu: 100m, memory: 64Mi}}
          securityContext:
            runAsNonRoot: true
            runAsUser: 1000
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
---
apiVersion: v1
kind: Service
metadata: {name: bad}
spec:
  ports: [{port: 8080}]
"""

EXPECTED_IN_BAD = [
    "Deployment/bad: pod must set automountServiceAccountToken: false",
    "Deployment/bad: pod must not use hostNetwork",
    "container app: missing readinessProbe",
    "container app: missing livenessProbe",
    "container app: missing resources.requests.memory",
    "container app: missing resources.limits.cpu",
    "container app: missing resources.limits.memory",
    "container app: image 'ghcr.io/portico/portico-gateway:latest' is not pinned",
    "container app: securityContext.runAsNonRoot must be true",
    "container app: securityContext.runAsUser must not be 0",
    "container app: securityContext.readOnlyRootFilesystem must be true",
    "container app: securityContext.allowPrivilegeEscalation must be false",
    "container app: securityContext.privileged must not be true",
    "container app: securityContext.capabilities.drop must contain ALL",
    "container app: securityContext.capabilities.add must be empty",
    "container app: securityContext.seccompProfile.type must be RuntimeDefault",
    "container wrong-uid: image 'ghcr.io/portico/portico-batch-processor' is not pinned",
    "container wrong-uid: Portico images run as uid 10001, got runAsUser 1000",
    "Service/bad: port #0 (8080) has no name",
]


def selftest() -> int:
    failures: list[str] = []
    good = check_stream(GOOD, "selftest:good")
    if good:
        failures += [f"known-good input was rejected: {v}" for v in good]
    bad = check_stream(BAD, "selftest:bad")
    if not bad:
        failures.append("known-bad input passed")
    for expected in EXPECTED_IN_BAD:
        if not any(expected in v for v in bad):
            failures.append(f"known-bad input did not report: {expected}")
    if failures:
        print("policy_check selftest FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print(f"policy_check selftest ok: known-good passed, known-bad gave {len(bad)} violations")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--selftest"]:
        return selftest()
    if not argv or any(a.startswith("--") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    violations: list[str] = []
    try:
        for path in argv:
            if path == "-":
                violations += check_stream(sys.stdin.read(), "<stdin>")
            else:
                with open(path, encoding="utf-8") as f:
                    violations += check_stream(f.read(), path)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"policy_check: {e}", file=sys.stderr)
        return 2
    if violations:
        print(f"policy_check: {len(violations)} violation(s):", file=sys.stderr)
        for v in violations:
            print(f"  - {v}", file=sys.stderr)
        return 1
    print("policy_check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
