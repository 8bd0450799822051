#!/usr/bin/env python3
"""Checks rendered chorus manifests; k8s/check.sh runs it inside its virtualenv.

    check_manifests.py BASE.yaml MONITORING.yaml MANAGED_REDIS.yaml REDIS_CLUSTER.yaml \
        ARCHIVE_POSTGRES.yaml MANAGED_POSTGRES.yaml

1. Schemas: every built-in object of the six renders against the
   Kubernetes OpenAPI schemas of kubernetes-validate, strict mode (unknown
   fields are errors), for each version in K8S_VERSIONS. A kind without a
   schema fails, except the CRD kinds in CRD_SCHEMAS, which are checked
   against the hand-written schemas below instead (kubernetes-validate ships
   no CRD schemas).
2. A canary: a Deployment with one unknown field must fail strict
   validation, so a validator that silently accepts everything is noticed.
3. Wiring that no schema sees: selectors match pod labels, named ports
   exist, Secret and ConfigMap references resolve to rendered objects with
   the referenced keys, the probes, drain timing, security context, and
   what each overlay adds or removes; the monitoring component's Grafana
   dashboard ConfigMap (the sidecar's label, a fixed name, the committed
   components/monitoring/chorus.json that deploy/grafana/chorus.json links to). The redis-cluster overlay gets the
   base's server checks, then its own: REDIS_CLUSTER_URLS (and no
   REDIS_URL) naming every StatefulSet pod by its stable DNS name, the
   cluster settings (cluster-enabled, AOF and nodes.conf on the volume,
   announced hostname and IP), and a bounded create Job whose script, as
   committed, runs one `--cluster create ... --cluster-replicas 1` over
   those same pods after its "already formed" check. The archive
   (components/archive-postgres, overlays/managed-postgres): the base
   unchanged but for DATABASE_URL on the chorus container, from a rendered
   Secret; in the cluster, a URL naming the Postgres Service, user, database
   and password the Postgres StatefulSet is given, its data on a volume,
   probes, a fast shutdown within the grace period, the restricted security
   context, and a NetworkPolicy admitting the chorus pods; managed, no
   Postgres in the cluster and a URL pointing out of it.

Prints one line per check; exits 1 if any failed.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import sys
from typing import Any, Callable

import jsonschema
import kubernetes_validate
import yaml

# Oldest version the base claims (the preStop sleep action needs 1.30) to the
# newest kubernetes-validate knows; check.sh passes its list in the environment.
K8S_VERSIONS = os.environ.get("CHORUS_K8S_VERSIONS", "1.30 1.33 1.37").split()

DRAIN_SECONDS = 10  # README "Shutdown": exits within 10 s of SIGTERM
DRAIN_MARGIN_SECONDS = 5
SERVER_LABELS = {"app.kubernetes.io/name": "chorus", "app.kubernetes.io/component": "server"}
REPLACEABLE = ("chorus/replaceable", "managed-redis")

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": LABEL_VALUE, "maxLength": 63},
        },
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

# monitoring.coreos.com/v1 PodMonitor: the subset of the prometheus-operator
# CRD (types and patterns as in its openAPIV3Schema, operator 0.91) covering
# the fields this repository may use. Anything else is rejected: extend the
# subset from the CRD when the PodMonitor grows. Required as in the CRD: spec,
# spec.selector.
PODMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253},
                "labels": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "pattern": LABEL_VALUE, "maxLength": 63},
                },
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "sampleLimit": {"type": "integer", "minimum": 0},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}

CRD_SCHEMAS = {("monitoring.coreos.com/v1", "PodMonitor"): PODMONITOR_SCHEMA}

failures: list[str] = []


def ok(message: str) -> None:
    print(f"  ok    {message}")


def fail(message: str) -> None:
    print(f"  FAIL  {message}")
    failures.append(message)


def check(condition: bool, message: str, detail: str = "") -> bool:
    if condition:
        ok(message)
    else:
        fail(f"{message}{': ' + detail if detail else ''}")
    return condition


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if not docs:
        raise SystemExit(f"check_manifests: {path} holds no objects")
    return docs


def kn(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def one(docs: list[dict], kind: str, pred: Callable[[dict], bool] = lambda d: True) -> dict:
    found = [d for d in docs if d["kind"] == kind and pred(d)]
    if len(found) != 1:
        raise SystemExit(f"check_manifests: expected exactly one {kind}, found {len(found)}")
    return found[0]


def named(docs: list[dict], kind: str, name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def matches(selector: dict, labels: dict) -> bool:
    """matchLabels only; the manifests use nothing else (checked)."""
    if set(selector) - {"matchLabels"}:
        return False
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def check_jwt_secret(docs: list[dict], env: dict) -> None:
    """CHORUS_JWT_SECRET comes from a Secret the operator creates: required
    (not optional) and never rendered, so no example value ships and the
    pods do not start without a real one."""
    ref = env.get("CHORUS_JWT_SECRET", {}).get("valueFrom", {}).get("secretKeyRef")
    if not check(ref is not None, "CHORUS_JWT_SECRET from a Secret"):
        return
    check(ref.get("optional") is not True, "CHORUS_JWT_SECRET: the Secret is required (not optional)")
    check(
        named(docs, "Secret", ref["name"]) is None,
        f"CHORUS_JWT_SECRET: Secret {ref['name']} is not rendered (the operator creates it)",
    )
    for secret in (d for d in docs if d["kind"] == "Secret"):
        check(
            "CHORUS_JWT_SECRET" not in secret_data(secret),
            f"no rendered Secret ({secret['metadata']['name']}) carries a CHORUS_JWT_SECRET",
        )


def secret_data(secret: dict) -> dict[str, str]:
    out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    out.update(secret.get("stringData") or {})
    return out


# --------------------------------------------------------------------------
# 1 + 2: schemas


def validate_schemas(label: str, docs: list[dict]) -> None:
    print(f"schemas of {label} ({len(docs)} objects; Kubernetes {', '.join(K8S_VERSIONS)}; strict)")
    for doc in docs:
        crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            errors = sorted(jsonschema.Draft202012Validator(crd).iter_errors(doc), key=str)
            check(
                not errors,
                f"{kn(doc)}: hand-written {doc['apiVersion']} subset schema (CRD, not in kubernetes-validate)",
                "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors),
            )
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                fail(f"{kn(doc)} against {version}: {'.'.join(map(str, e.path))}: {e.message}")
                break
            except kubernetes_validate.SchemaNotFoundError as e:
                fail(f"{kn(doc)}: {e.message} (neither a built-in kind nor a known CRD)")
                break
        else:
            ok(f"{kn(doc)} ({doc['apiVersion']})")


def canary(base: list[dict]) -> None:
    print("canary: strict validation rejects an unknown field")
    broken = copy.deepcopy(one(base, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["bogusField"] = True
    try:
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError:
        ok("Deployment with containers[0].bogusField is rejected")
    else:
        fail("kubernetes-validate accepted an unknown field: strict mode is not working")
    broken_pm = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x"},
        "spec": {"podMetricsEndpoints": [{"port": "http", "intervall": "30s"}]},
    }
    errors = list(jsonschema.Draft202012Validator(PODMONITOR_SCHEMA).iter_errors(broken_pm))
    check(
        len(errors) >= 2,
        "PodMonitor without selector and with a misspelt field is rejected",
        f"only {len(errors)} error(s)",
    )


# --------------------------------------------------------------------------
# 3: wiring


def check_server(docs: list[dict]) -> tuple[dict, dict]:
    """The chorus objects, whichever Redis they use: returns the Deployment
    and its container's env by name."""
    check(
        all("namespace" not in d["metadata"] for d in docs),
        "no object names a namespace (namespace-agnostic base)",
    )
    check(not [d for d in docs if d["kind"] == "Namespace"], "no Namespace object")
    names = [kn(d) for d in docs]
    check(len(names) == len(set(names)), "no duplicate objects", str(names))

    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    check(dep["spec"]["replicas"] == 3, "Deployment: 3 replicas")
    check(matches(dep["spec"]["selector"], labels), "Deployment: selector matches its pod labels")
    check(
        all(labels.get(k) == v for k, v in SERVER_LABELS.items()),
        "Deployment: pods carry the server labels",
    )
    check(len(spec["containers"]) == 1, "Deployment: one container")
    c = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    check(ports.get("http") == 8080, "container port named http is 8080")

    env = {e["name"]: e for e in c.get("env", [])}
    cm_refs = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
    config: dict[str, str] = {}
    for ref in cm_refs:
        cm = named(docs, "ConfigMap", ref)
        if check(cm is not None, f"envFrom ConfigMap {ref} is rendered"):
            config.update(cm.get("data") or {})

    def value(name: str) -> str | None:
        if name in env:
            return env[name].get("value")
        return config.get(name)

    check(value("PORT") == str(ports.get("http")), "PORT equals the http container port")
    check(
        env.get("CHORUS_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        == "metadata.name",
        "CHORUS_NODE_ID from the pod name (fieldRef metadata.name)",
    )
    check(value("CHORUS_LOG_FORMAT") == "json", "CHORUS_LOG_FORMAT=json")
    check(value("CHORUS_STATIC_DIR") is None, "no CHORUS_STATIC_DIR (the web client is built into the binary)")
    prefix = value("CHORUS_REDIS_PREFIX")
    check(prefix is None or prefix != "", "CHORUS_REDIS_PREFIX not empty")
    ttl = value("CHORUS_PRESENCE_TTL_SECS")
    check(ttl is None or (ttl.isdigit() and 1 <= int(ttl) <= 86400), "CHORUS_PRESENCE_TTL_SECS in 1..86400")
    check_jwt_secret(docs, env)

    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        get = c.get(probe, {}).get("httpGet", {})
        check(
            get.get("path") == path and get.get("port") in ("http", 8080),
            f"{probe}: GET {path} on the http port",
            str(get),
        )
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    exec_cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec")
    if check(isinstance(sleep, int) and sleep > 0, "preStop: sleep action", str(c.get("lifecycle"))):
        grace = spec.get("terminationGracePeriodSeconds", 30)
        check(
            grace >= sleep + DRAIN_SECONDS + DRAIN_MARGIN_SECONDS,
            f"terminationGracePeriodSeconds {grace} >= preStop {sleep} + drain {DRAIN_SECONDS}"
            f" + margin {DRAIN_MARGIN_SECONDS}",
        )
    check(exec_cmd is None, "preStop needs no shell or binary in the image")

    res = c.get("resources", {})
    check(
        all(res.get("requests", {}).get(k) for k in ("cpu", "memory"))
        and all(res.get("limits", {}).get(k) for k in ("cpu", "memory")),
        "resources: cpu and memory requests and limits",
    )
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})

    def sc(key: str) -> Any:
        return csc.get(key, psc.get(key))

    check(sc("runAsNonRoot") is True and sc("runAsUser") == 10001, "runAsNonRoot, runAsUser 10001")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    check((sc("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
    check(spec.get("enableServiceLinks") is False, "enableServiceLinks false (no injected CHORUS_REDIS_* variables)")
    terms = spec.get("affinity", {}).get("podAntiAffinity", {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution", []
    )
    check(
        any(
            t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            and matches(t["podAffinityTerm"]["labelSelector"], labels)
            for t in terms
        ),
        "preferred pod anti-affinity by hostname on its own pods",
    )
    check(
        not spec.get("affinity", {}).get("podAntiAffinity", {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        ),
        "anti-affinity is only preferred (more pods than nodes still schedule)",
    )
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"] for v in spec.get("volumes", [])}
    check(
        all(m["name"] in vols for m in c.get("volumeMounts", [])) and "/tmp" in mounts,
        "volume mounts resolve; writable /tmp beside the read-only root",
    )
    ann = pod["metadata"].get("annotations", {})
    check(
        ann.get("prometheus.io/port") in (None, str(ports.get("http"))),
        "prometheus.io/port annotation equals the http port",
    )

    svc = named(docs, "Service", "chorus")
    if check(svc is not None, "Service chorus exists"):
        check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", "Service chorus: ClusterIP")
        check(matches({"matchLabels": svc["spec"]["selector"]}, labels), "Service chorus selects the pods")
        sp = svc["spec"]["ports"]
        check(
            len(sp) == 1 and sp[0]["port"] == 80 and sp[0]["targetPort"] == "http" and sp[0].get("name") == "http",
            "Service chorus: port 80 (named http) -> targetPort http",
        )

    ingresses = [d for d in docs if d["kind"] == "Ingress"]
    for ing in ingresses:
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                b = p["backend"]["service"]
                target = named(docs, "Service", b["name"])
                port_ok = target is not None and any(
                    sp.get("name") == b["port"].get("name") or sp["port"] == b["port"].get("number")
                    for sp in target["spec"]["ports"]
                )
                check(port_ok, f"{kn(ing)} {p['path']}: backend {b['name']}:{b['port'].get('name', b['port'].get('number'))} exists")
    main = named(docs, "Ingress", "chorus")
    if check(main is not None, "Ingress chorus exists"):
        a = main["metadata"].get("annotations", {})
        pre = "nginx.ingress.kubernetes.io/"
        check(main["spec"].get("ingressClassName") == "nginx", "Ingress chorus: ingressClassName nginx")
        check(a.get(pre + "affinity") == "cookie", "Ingress: cookie affinity")
        check(bool(a.get(pre + "session-cookie-name")), "Ingress: session-cookie-name set")
        for t in ("proxy-read-timeout", "proxy-send-timeout"):
            check(a.get(pre + t) == "3600", f"Ingress: {t} 3600")
        check(
            not any("snippet" in k for i in ingresses for k in i["metadata"].get("annotations", {})),
            "no snippet annotations (disabled by default in ingress-nginx)",
        )
        hosts = {r.get("host") for r in main["spec"]["rules"]}
        root = [p for r in main["spec"]["rules"] for p in r["http"]["paths"]]
        check(
            any(p["path"] == "/" and p["pathType"] == "Prefix" for p in root),
            "Ingress chorus routes / (Prefix) to the app",
        )
        deny = [
            i
            for i in ingresses
            if {"0.0.0.0/0", "::/0"}
            <= {
                s.strip()
                for s in i["metadata"].get("annotations", {}).get(pre + "denylist-source-range", "").split(",")
            }
        ]
        covers = any(
            r.get("host") in hosts
            and any(p["path"] == "/metrics" and p["pathType"] in ("Prefix", "Exact") for p in r["http"]["paths"])
            for i in deny
            for r in i["spec"]["rules"]
        )
        check(covers, "/metrics on the same host is denied to every address (denylist 0.0.0.0/0,::/0)")
        check(
            all(
                p["path"] == "/metrics"
                for i in deny
                for r in i["spec"]["rules"]
                for p in r["http"]["paths"]
            ),
            "the deny Ingress covers /metrics only",
        )

    hpa = one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    check(
        ref == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]},
        "HPA targets the Deployment",
    )
    check(hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 10, "HPA min 3 max 10")
    check(
        any(
            m["type"] == "Resource"
            and m["resource"]["name"] == "cpu"
            and m["resource"]["target"]["type"] == "Utilization"
            for m in hpa["spec"]["metrics"]
        ),
        "HPA on CPU utilization",
    )
    pdb = one(docs, "PodDisruptionBudget", lambda d: d["metadata"]["name"] == dep["metadata"]["name"])
    check(matches(pdb["spec"]["selector"], labels), "PDB selects the chorus pods")
    check(
        pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 2,
        "PDB: maxUnavailable 1 or minAvailable 2",
    )
    check(
        pdb["spec"].get("minAvailable") is None or pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"],
        "PDB leaves room for a voluntary disruption at the HPA minimum",
    )

    return dep, env


def secret_setting(docs: list[dict], env: dict, name: str) -> str:
    """The value of setting NAME, which must come from a rendered Secret
    (a Redis URL may carry a password); "" when it does not."""
    ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
    if not check(ref is not None, f"{name} from a Secret"):
        return ""
    secret = named(docs, "Secret", ref["name"])
    if not check(secret is not None, f"{name}: Secret {ref['name']} is rendered"):
        return ""
    value = secret_data(secret).get(ref["key"], "")
    check(value != "", f"{name}: key {ref['key']} present and not empty")
    return value


def restricted(pod_spec: dict, container: dict) -> bool:
    """Pod Security Standard `restricted`, as every pod here meets it."""
    psc, csc = pod_spec.get("securityContext", {}), container.get("securityContext", {})
    return (
        csc.get("readOnlyRootFilesystem") is True
        and csc.get("allowPrivilegeEscalation") is False
        and csc.get("capabilities", {}).get("drop") == ["ALL"]
        and csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
        and (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
    )


def check_base(docs: list[dict]) -> None:
    print("base wiring")
    dep, env = check_server(docs)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    url = secret_setting(docs, env, "REDIS_URL")
    check(url.startswith(("redis://", "rediss://")), "REDIS_URL is redis:// or rediss:// (chorus refuses others)")

    # Redis
    sts = one(docs, "StatefulSet")
    rpod = sts["spec"]["template"]
    rc = rpod["spec"]["containers"][0]
    check(sts["spec"]["replicas"] == 1, "Redis: StatefulSet with 1 replica")
    check(rc["image"] == "redis:7-alpine", "Redis: image redis:7-alpine")
    args = rc.get("command", []) + rc.get("args", [])
    check(
        any(a == "--appendonly" and b == "yes" for a, b in zip(args, args[1:])),
        "Redis: --appendonly yes",
    )
    vct = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    check(
        bool(vct) and any(m["name"] in vct for m in rc.get("volumeMounts", [])),
        "Redis: data on a PVC template",
    )
    check(matches(sts["spec"]["selector"], rpod["metadata"]["labels"]), "Redis: selector matches its pods")
    check(not matches(dep["spec"]["selector"], rpod["metadata"]["labels"]), "Redis pods are not chorus pods")
    governing = named(docs, "Service", sts["spec"]["serviceName"])
    check(
        governing is not None and governing["spec"].get("clusterIP") == "None",
        f"Redis: governing Service {sts['spec']['serviceName']} is headless",
    )
    check(
        restricted(rpod["spec"], rc),
        "Redis: non-root, read-only root, no privilege escalation, no capabilities",
    )
    redis_objects = [d for d in docs if d["metadata"].get("labels", {}).get(REPLACEABLE[0]) == REPLACEABLE[1]]
    check(
        {d["kind"] for d in redis_objects} >= {"StatefulSet", "Service"}
        and all(
            d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "redis" for d in redis_objects
        ),
        f"Redis objects labelled {REPLACEABLE[0]}={REPLACEABLE[1]}: "
        + ", ".join(sorted(kn(d) for d in redis_objects)),
    )
    host = re.match(r"^rediss?://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", url)
    if check(host is not None, "REDIS_URL has a host"):
        rsvc = named(docs, "Service", host.group(1))
        check(
            rsvc is not None
            and matches({"matchLabels": rsvc["spec"]["selector"]}, rpod["metadata"]["labels"])
            and any(p["port"] == int(host.group(2) or 6379) for p in rsvc["spec"]["ports"]),
            f"example REDIS_URL host {host.group(1)} is the in-cluster Redis Service and port",
        )
    for np in (d for d in docs if d["kind"] == "NetworkPolicy"):
        peers = [f for rule in np["spec"].get("ingress", []) for f in rule.get("from", [])]
        check(
            matches(np["spec"]["podSelector"], rpod["metadata"]["labels"])
            and any(matches(p.get("podSelector", {}), labels) for p in peers),
            f"{kn(np)}: admits the chorus pods to Redis",
        )


# kubectl apply (client-side) keeps the whole object in an annotation, which
# may hold at most 256 KiB.
LAST_APPLIED_LIMIT = 262144


def check_dashboard(base: list[dict], extra: list[dict]) -> None:
    """The Grafana dashboard ConfigMap: for the sidecar, and the committed file."""
    cms = [d for d in extra if d["kind"] == "ConfigMap"]
    if not check(len(cms) == 1, "one dashboard ConfigMap"):
        return
    cm = cms[0]
    labels = cm["metadata"].get("labels", {})
    check(labels.get("grafana_dashboard") == "1", f'{kn(cm)}: labelled grafana_dashboard: "1" (the Grafana sidecar)')
    check(
        labels.get("app.kubernetes.io/part-of") == "chorus" and labels.get("app.kubernetes.io/name") == "chorus",
        f"{kn(cm)}: carries the base's labels",
    )
    check(
        cm["metadata"]["name"] == "chorus-grafana-dashboard",
        f"{kn(cm)}: a fixed name (no hash suffix: one ConfigMap per dashboard for the sidecar)",
    )
    check(not any(d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {}) for d in base),
          "the base has no dashboard (component is optional)")
    data = cm.get("data", {})
    check(list(data) == ["chorus.json"], f"{kn(cm)}: holds chorus.json only", ", ".join(data))
    here = os.path.dirname(os.path.abspath(__file__))
    committed_path = os.path.join(here, "components", "monitoring", "chorus.json")
    with open(committed_path, encoding="utf-8") as f:
        committed = f.read()
    check(data.get("chorus.json") == committed, f"{kn(cm)}: chorus.json is components/monitoring/chorus.json as committed")
    shared = os.path.join(os.path.dirname(here), "deploy", "grafana", "chorus.json")
    check(
        os.path.islink(shared) and os.path.realpath(shared) == os.path.realpath(committed_path),
        "deploy/grafana/chorus.json is a symlink to that file (one dashboard for compose and Kubernetes)",
    )
    try:
        dash = json.loads(data.get("chorus.json", ""))
    except ValueError as e:
        check(False, f"{kn(cm)}: chorus.json is JSON", str(e))
        return
    check(bool(dash.get("uid")) and bool(dash.get("panels")), f"{kn(cm)}: a dashboard with a uid ({dash.get('uid')}) and panels")
    size = len(json.dumps(cm))
    check(size < LAST_APPLIED_LIMIT // 2, f"{kn(cm)}: {size} bytes, well under kubectl apply's {LAST_APPLIED_LIMIT}-byte annotation limit")


def check_monitoring(base: list[dict], mon: list[dict]) -> None:
    print("monitoring overlay (base + components/monitoring)")
    extra = [d for d in mon if d not in base]
    missing = [kn(d) for d in base if d not in mon]
    check(not missing, "contains the base unchanged", ", ".join(missing))
    check(
        sorted(d["kind"] for d in extra) == ["ConfigMap", "PodMonitor"],
        "adds exactly one PodMonitor and one ConfigMap (the Grafana dashboard)",
        ", ".join(kn(d) for d in extra),
    )
    check(not any(d["kind"] == "PodMonitor" for d in base), "the base has no PodMonitor (component is optional)")
    check_dashboard(base, extra)
    pm = next((d for d in extra if d["kind"] == "PodMonitor"), None)
    if pm is None:
        return
    pod = one(mon, "Deployment")["spec"]["template"]
    check(matches(pm["spec"]["selector"], pod["metadata"]["labels"]), "PodMonitor selects the chorus pods")
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    eps = pm["spec"].get("podMetricsEndpoints", [])
    check(
        bool(eps) and all(e.get("port") in ports and e.get("path", "/metrics") == "/metrics" for e in eps),
        "PodMetricsEndpoints scrape /metrics on a named container port",
    )

    def secs(d: str) -> float:
        units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
        return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|y|w|d|h|m|s)", d))

    check(
        all(secs(e.get("scrapeTimeout", "10s")) <= secs(e.get("interval", "30s")) for e in eps),
        "scrapeTimeout <= interval (the operator rejects otherwise)",
    )
    check("namespace" not in pm["metadata"] and "namespaceSelector" not in pm["spec"], "PodMonitor namespace-agnostic")


def check_managed_redis(base: list[dict], mr: list[dict]) -> None:
    print("managed-redis overlay")
    left = [kn(d) for d in mr if d["metadata"].get("labels", {}).get(REPLACEABLE[0]) == REPLACEABLE[1]]
    check(not left, "no in-cluster Redis object left", ", ".join(left))
    check(not any(d["kind"] == "StatefulSet" for d in mr), "no StatefulSet")
    kept = {kn(d) for d in base if d["kind"] not in ("Secret",)} - {
        kn(d) for d in base if d["metadata"].get("labels", {}).get(REPLACEABLE[0]) == REPLACEABLE[1]
    }
    check(kept <= {kn(d) for d in mr}, "keeps every chorus object")
    c = one(mr, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = named(mr, "Secret", ref["name"])
    if check(secret is not None, f"Deployment references the overlay's Secret {ref['name']}"):
        data = secret_data(secret)
        url = data.get("REDIS_URL", "")
        check(
            url.startswith(("redis://", "rediss://")) and "chorus-redis" not in url,
            "REDIS_URL points outside the cluster",
            url,
        )
    check_jwt_secret(mr, env)

def flags(args: list[str]) -> dict[str, str]:
    """`--name value` pairs of a command line."""
    return {a[2:]: b for a, b in zip(args, args[1:]) if a.startswith("--") and not b.startswith("--")}


def check_redis_cluster(base: list[dict], rc: list[dict], script_dir: str) -> None:
    """overlays/redis-cluster: the chorus objects as in the base, on a Redis
    Cluster of one StatefulSet formed by a Job, with REDIS_CLUSTER_URLS."""
    print("redis-cluster overlay: server wiring (as for the base)")
    dep, env = check_server(rc)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    print("redis-cluster overlay: the Redis Cluster")

    def instance(d: dict) -> str | None:
        return d["metadata"].get("labels", {}).get("app.kubernetes.io/instance")

    left = [kn(d) for d in rc if instance(d) == "chorus-redis"]
    check(not left, "the base's single Redis is gone", ", ".join(left))
    base_redis = {kn(d) for d in base if d["metadata"].get("labels", {}).get(REPLACEABLE[0]) == REPLACEABLE[1]}
    kept = {kn(d) for d in base if d["kind"] != "Secret"} - base_redis
    check(kept <= {kn(d) for d in rc}, "keeps every chorus object", ", ".join(sorted(kept - {kn(d) for d in rc})))

    # chorus: REDIS_CLUSTER_URLS, and REDIS_URL nowhere (chorus refuses both).
    c = dep["spec"]["template"]["spec"]["containers"][0]
    from_config: set[str] = set()
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            from_config |= set((named(rc, "ConfigMap", source["configMapRef"]["name"]) or {}).get("data") or {})
        if "secretRef" in source:
            from_config |= set(secret_data(named(rc, "Secret", source["secretRef"]["name"]) or {}))
    check(
        "REDIS_URL" not in env and "REDIS_URL" not in from_config,
        "no REDIS_URL in the chorus container (env or envFrom) beside REDIS_CLUSTER_URLS",
    )
    check(
        not [d for d in rc if d["kind"] == "Secret" and "REDIS_URL" in secret_data(d)],
        "no rendered Secret holds a REDIS_URL",
    )
    urls = secret_setting(rc, env, "REDIS_CLUSTER_URLS")
    seeds = [u.strip() for u in urls.split(",") if u.strip()]

    sts_all = [d for d in rc if d["kind"] == "StatefulSet"]
    if not check(len(sts_all) == 1, "one StatefulSet", ", ".join(kn(d) for d in sts_all)):
        return
    sts = sts_all[0]
    name, svc_name = sts["metadata"]["name"], sts["spec"]["serviceName"]
    replicas = sts["spec"]["replicas"]
    rpod = sts["spec"]["template"]
    rlabels = rpod["metadata"]["labels"]
    c_redis = rpod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c_redis.get("ports", [])}
    args = flags(c_redis.get("command", []) + c_redis.get("args", []))
    port = int(args.get("port", "6379"))
    bus = int(args.get("cluster-port", str(port + 10000)))
    pod_env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c_redis.get("env", [])}
    hosts = [f"{name}-{i}.{svc_name}" for i in range(replicas)]

    check(replicas == 6, f"{kn(sts)}: 6 pods (3 primaries + 3 replicas)", str(replicas))
    m = re.match(r"^redis:(\d+)", c_redis["image"])
    check(m is not None and int(m.group(1)) >= 7, f"{kn(sts)}: image Redis 7+ ({c_redis['image']})")
    check(
        sts["spec"].get("podManagementPolicy") == "Parallel",
        f"{kn(sts)}: podManagementPolicy Parallel (pods are unready until the cluster is formed)",
    )
    check(matches(sts["spec"]["selector"], rlabels), f"{kn(sts)}: selector matches its pods")
    check(not matches(dep["spec"]["selector"], rlabels), "Redis pods are not chorus pods")
    check(args.get("cluster-enabled") == "yes", "Redis: --cluster-enabled yes")
    check(args.get("appendonly") == "yes", "Redis: --appendonly yes")
    vct = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    data_mounts = [m["mountPath"] for m in c_redis.get("volumeMounts", []) if m["name"] in vct]
    check(bool(data_mounts), "Redis: data on a PVC template")
    check(
        any(args.get("cluster-config-file", "").startswith(mp.rstrip("/") + "/") for mp in data_mounts)
        and args.get("dir") in data_mounts,
        "Redis: nodes.conf and the AOF (--dir) on the volume (a node keeps its identity across restarts)",
        str(args),
    )
    check(
        ports.get("redis") == port and ports.get("cluster-bus") == bus,
        f"Redis: container ports redis {port} and cluster-bus {bus} (port + 10000 unless --cluster-port)",
        str(ports),
    )
    check(
        args.get("cluster-announce-hostname") == f"$(POD_NAME).{svc_name}"
        and pod_env.get("POD_NAME") == "metadata.name",
        f"Redis: announces its stable name $(POD_NAME).{svc_name} (POD_NAME from metadata.name)",
    )
    check(
        args.get("cluster-preferred-endpoint-type") == "hostname",
        "Redis: clients are sent hostnames (cluster-preferred-endpoint-type hostname), never stale pod IPs",
    )
    check(
        args.get("cluster-announce-ip") == "$(POD_IP)" and pod_env.get("POD_IP") == "status.podIP",
        "Redis: announces its current pod IP on the bus (POD_IP from status.podIP)",
    )
    ready = " ".join(c_redis.get("readinessProbe", {}).get("exec", {}).get("command", []))
    check("cluster_state:ok" in ready, "Redis: ready only in a healthy cluster (readiness checks cluster_state:ok)")
    check(bool(c_redis.get("livenessProbe")), "Redis: liveness probe")
    res = c_redis.get("resources", {})
    check(
        all(res.get("requests", {}).get(k) for k in ("cpu", "memory")) and res.get("limits", {}).get("memory"),
        "Redis: cpu and memory requests, memory limit",
    )
    check(restricted(rpod["spec"], c_redis), "Redis: restricted security context")

    governing = named(rc, "Service", svc_name)
    if check(governing is not None, f"governing Service {svc_name} is rendered"):
        gs = governing["spec"]
        check(
            gs.get("clusterIP") == "None" and gs.get("publishNotReadyAddresses") is True,
            f"Service {svc_name}: headless, names published before the pods are ready",
        )
        check(matches({"matchLabels": gs["selector"]}, rlabels), f"Service {svc_name} selects the Redis pods")
        check(
            {p["port"] for p in gs["ports"]} >= {port, bus},
            f"Service {svc_name}: ports {port} and {bus}",
        )

    check(len(seeds) == replicas, f"REDIS_CLUSTER_URLS: one seed per pod ({replicas})", urls)
    check(
        sorted(seeds) == sorted(f"redis://{h}:{port}" for h in hosts),
        f"REDIS_CLUSTER_URLS: the pods' stable DNS names {name}-N.{svc_name}:{port}",
        urls,
    )

    pdb = [d for d in rc if d["kind"] == "PodDisruptionBudget" and matches(d["spec"]["selector"], rlabels)]
    check(
        len(pdb) == 1 and pdb[0]["spec"].get("maxUnavailable") == 1,
        "a PDB lets one Redis pod go at a time (maxUnavailable 1)",
    )

    jobs = [d for d in rc if d["kind"] == "Job"]
    if not check(len(jobs) == 1, "one Job (cluster create)", ", ".join(kn(d) for d in jobs)):
        return
    job = jobs[0]
    jspec = job["spec"]
    jpod = jspec["template"]
    jc = jpod["spec"]["containers"][0]
    jlabels = jpod["metadata"]["labels"]
    check(not matches(sts["spec"]["selector"], jlabels), f"{kn(job)}: its pod is not a Redis node")
    check(
        jpod["spec"].get("restartPolicy") in ("Never", "OnFailure")
        and isinstance(jspec.get("backoffLimit"), int)
        and isinstance(jspec.get("activeDeadlineSeconds"), int),
        f"{kn(job)}: bounded (backoffLimit, activeDeadlineSeconds)",
    )
    check(jc["image"] == c_redis["image"], f"{kn(job)}: the Redis image (its redis-cli matches the servers)")
    jres = jc.get("resources", {})
    check(
        all(jres.get("requests", {}).get(k) for k in ("cpu", "memory"))
        and all(jres.get("limits", {}).get(k) for k in ("cpu", "memory")),
        f"{kn(job)}: cpu and memory requests and limits",
    )
    check(restricted(jpod["spec"], jc), f"{kn(job)}: restricted security context")
    jenv = {e["name"]: e.get("value", "") for e in jc.get("env", [])}
    nodes = jenv.get("REDIS_CLUSTER_NODES", "").split()
    check(
        sorted(nodes) == sorted(f"{h}:{port}" for h in hosts),
        f"{kn(job)}: REDIS_CLUSTER_NODES names all {replicas} pods by their DNS names, as the seeds do",
        " ".join(nodes),
    )
    # The script: a key of a rendered ConfigMap mounted where the command runs it.
    command = jc.get("command", []) + jc.get("args", [])
    mounts = {m["name"]: m["mountPath"] for m in jc.get("volumeMounts", [])}
    script = None
    for v in jpod["spec"].get("volumes", []):
        cm = named(rc, "ConfigMap", v.get("configMap", {}).get("name", "")) if "configMap" in v else None
        for key, text in ((cm or {}).get("data") or {}).items():
            if v["name"] in mounts and f"{mounts[v['name']]}/{key}" in command:
                script = (key, text)
    if not check(script is not None, f"{kn(job)}: runs a script of a rendered ConfigMap it mounts", str(command)):
        return
    key, text = script
    with open(os.path.join(script_dir, key), encoding="utf-8") as f:
        check(f.read() == text, f"{kn(job)}: the ConfigMap holds overlays/redis-cluster/{key} as committed")
    create = [line for line in text.splitlines() if re.match(r"^\s*redis-cli --cluster create ", line)]
    check(
        len(create) == 1 and "--cluster-replicas 1" in create[0] and "--cluster-yes" in create[0],
        f"{key}: one redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes",
        " | ".join(create),
    )
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    skip = code.find("already formed")
    check(
        "cluster_state" in code and 0 <= skip < code.find("redis-cli --cluster create"),
        f"{key}: checks for a healthy cluster (cluster_state) and skips before it would create one",
    )
    check("REDIS_CLUSTER_NODES" in code, f"{key}: creates over the nodes REDIS_CLUSTER_NODES names")

    # Who may talk to the nodes.
    nps = [d for d in rc if d["kind"] == "NetworkPolicy" and matches(d["spec"]["podSelector"], rlabels)]
    if check(len(nps) == 1, "one NetworkPolicy guards the Redis pods"):
        rules = nps[0]["spec"].get("ingress", [])

        def admits(peer_labels: dict, p: int) -> bool:
            return any(
                any(matches(f.get("podSelector", {}), peer_labels) for f in r.get("from", []))
                and any(x.get("port") == p for x in r.get("ports", []))
                for r in rules
            )

        check(admits(pod_labels, port), f"{kn(nps[0])}: admits the chorus pods on {port}")
        check(admits(jlabels, port), f"{kn(nps[0])}: admits the create Job on {port}")
        check(
            admits(rlabels, port) and admits(rlabels, bus),
            f"{kn(nps[0])}: admits the Redis pods to each other on {port} and {bus}",
        )
        check(not admits(pod_labels, bus), f"{kn(nps[0])}: the cluster bus is closed to chorus")

    ours = [d for d in rc if instance(d) in ("chorus-redis-cluster", "chorus-redis-cluster-create")]
    check(
        {d["kind"] for d in ours} >= {"StatefulSet", "Service", "Job", "PodDisruptionBudget", "NetworkPolicy"}
        and all(
            d["metadata"]["labels"].get(REPLACEABLE[0]) == REPLACEABLE[1]
            and d["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"
            for d in ours
        ),
        f"Redis Cluster objects labelled {REPLACEABLE[0]}={REPLACEABLE[1]}: " + ", ".join(sorted(kn(d) for d in ours)),
    )


PG_URL = re.compile(r"^postgres(?:ql)?://([^:@/]+)(?::([^@/]*))?@([^:/?]+)(?::(\d+))?/([^?/]+)(?:\?.*)?$")


def archive_url(docs: list[dict], base: list[dict]) -> tuple[dict, re.Match | None]:
    """What an archive overlay must share: the base's objects unchanged but
    for the chorus container's DATABASE_URL, from a rendered Secret, as a
    postgres:// URL. Returns the Deployment and the URL's match."""
    dep, env = check_server(docs)
    base_dep = one(base, "Deployment")
    changed = copy.deepcopy(dep)
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [
        e for e in changed["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] != "DATABASE_URL"
    ]
    check(changed == base_dep, "the Deployment is the base's but for DATABASE_URL")
    base_rest = [d for d in base if d["kind"] != "Deployment"]
    missing = [kn(d) for d in base_rest if d not in docs]
    check(not missing, "every other object of the base, unchanged", ", ".join(missing))
    url = secret_setting(docs, env, "DATABASE_URL")
    m = PG_URL.match(url)
    check(m is not None, "DATABASE_URL is postgres://user[:password]@host[:port]/database", url)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    from_env = {e["name"] for e in c.get("env", [])}
    check(
        "CHORUS_ARCHIVE_DYNAMODB_TABLE" not in from_env
        and not [d for d in docs if "CHORUS_ARCHIVE_DYNAMODB_TABLE" in (d.get("data") or {})],
        "no CHORUS_ARCHIVE_DYNAMODB_TABLE beside DATABASE_URL (chorus refuses both)",
    )
    return dep, m


def check_no_archive(label: str, docs: list[dict]) -> None:
    c = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    check(
        not {"DATABASE_URL", "CHORUS_ARCHIVE_DYNAMODB_TABLE"} & {e["name"] for e in c.get("env", [])},
        f"{label}: no archive setting (the archive is optional)",
    )


def check_archive_postgres(base: list[dict], ap: list[dict]) -> None:
    """overlays/archive-postgres: base + components/archive-postgres."""
    print("archive-postgres overlay (base + components/archive-postgres): server wiring")
    dep, m = archive_url(ap, base)
    print("archive-postgres overlay: the Postgres")
    pg = [d for d in ap if d["kind"] == "StatefulSet" and d not in base]
    if not check(len(pg) == 1, "adds one StatefulSet", ", ".join(kn(d) for d in pg)):
        return
    sts = pg[0]
    ppod = sts["spec"]["template"]
    plabels = ppod["metadata"]["labels"]
    c = ppod["spec"]["containers"][0]
    name = kn(sts)
    check(sts["spec"]["replicas"] == 1, f"{name}: 1 replica")
    check(re.match(r"^postgres:1[5-9](\.|-|$)", c["image"]) is not None, f"{name}: image postgres 15+ ({c['image']})")
    check(matches(sts["spec"]["selector"], plabels), f"{name}: selector matches its pods")
    check(not matches(dep["spec"]["selector"], plabels), "Postgres pods are not chorus pods")
    env = {e["name"]: e for e in c.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    vct = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
    data = [mt["mountPath"] for mt in c.get("volumeMounts", []) if mt["name"] in vct]
    pgdata = env.get("PGDATA", {}).get("value", "/var/lib/postgresql/data")
    check(
        len(data) == 1 and pgdata.startswith(data[0].rstrip("/") + "/"),
        f"{name}: PGDATA ({pgdata}) in a folder of the volume (a fresh volume's lost+found stops initdb)",
        str(data),
    )
    check(
        all(t["spec"]["resources"]["requests"].get("storage") for t in vct.values()),
        f"{name}: the volume requests storage",
    )
    pw = env.get("POSTGRES_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    secret = named(ap, "Secret", pw["name"]) if pw else None
    password = secret_data(secret).get(pw["key"]) if secret else None
    check(password not in (None, ""), f"{name}: POSTGRES_PASSWORD from a rendered Secret")
    if m is not None:
        user, url_pw, host, port, db = m.groups()
        port = int(port or 5432)
        check(env.get("POSTGRES_USER", {}).get("value") == user, f"DATABASE_URL's user {user} is POSTGRES_USER")
        check(env.get("POSTGRES_DB", {}).get("value") == db, f"DATABASE_URL's database {db} is POSTGRES_DB")
        check(url_pw == password, "DATABASE_URL's password is the server's POSTGRES_PASSWORD")
        svc = named(ap, "Service", host)
        check(
            svc is not None
            and matches({"matchLabels": svc["spec"]["selector"]}, plabels)
            and any(
                sp["port"] == port and sp["targetPort"] in (ports.get("postgres"), "postgres") for sp in svc["spec"]["ports"]
            ),
            f"DATABASE_URL's host {host}:{port} is a Service of the Postgres pods",
        )
    check(ports.get("postgres") == 5432, f"{name}: container port postgres 5432")
    ready = " ".join(c.get("readinessProbe", {}).get("exec", {}).get("command", []))
    check("pg_isready" in ready, f"{name}: readiness by pg_isready")
    check(bool(c.get("livenessProbe")) and bool(c.get("startupProbe")), f"{name}: liveness and startup probes")
    stop = " ".join(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
    t = re.search(r"-t (\d+)", stop)
    grace = ppod["spec"].get("terminationGracePeriodSeconds", 30)
    check(
        "pg_ctl stop" in stop and "-m fast" in stop and t is not None and int(t.group(1)) < grace,
        f"{name}: preStop fast shutdown within terminationGracePeriodSeconds {grace}",
        stop,
    )
    res = c.get("resources", {})
    check(
        all(res.get("requests", {}).get(k) for k in ("cpu", "memory")) and res.get("limits", {}).get("memory"),
        f"{name}: cpu and memory requests, memory limit",
    )
    check(restricted(ppod["spec"], c), f"{name}: restricted security context")
    writable = {mt["mountPath"] for mt in c.get("volumeMounts", [])}
    check(
        {"/var/run/postgresql", "/tmp"} <= writable,
        f"{name}: writable socket directory and /tmp beside the read-only root",
    )
    governing = named(ap, "Service", sts["spec"]["serviceName"])
    check(
        governing is not None and governing["spec"].get("clusterIP") == "None",
        f"{name}: governing Service {sts['spec']['serviceName']} is headless",
    )
    nps = [d for d in ap if d["kind"] == "NetworkPolicy" and matches(d["spec"]["podSelector"], plabels)]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    check(
        len(nps) == 1
        and any(
            any(matches(f.get("podSelector", {}), pod_labels) for f in r.get("from", []))
            and any(x.get("port") == 5432 for x in r.get("ports", []))
            for r in nps[0]["spec"].get("ingress", [])
        ),
        "a NetworkPolicy admits the chorus pods to Postgres on 5432",
    )
    added = [d for d in ap if d not in base and d["kind"] != "Deployment"]
    check(
        all(d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "chorus" for d in added),
        "what the component adds carries the base's labels: " + ", ".join(sorted(kn(d) for d in added)),
    )


def check_managed_postgres(base: list[dict], mp: list[dict]) -> None:
    """overlays/managed-postgres: only the Secret and the Deployment's env."""
    print("managed-postgres overlay: server wiring")
    _, m = archive_url(mp, base)
    check(
        not [d for d in mp if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "postgres"],
        "no Postgres in the cluster",
    )
    added = sorted(kn(d) for d in mp if d not in base and d["kind"] != "Deployment")
    check(len(added) == 1 and added[0].startswith("Secret/"), "adds only the Secret", ", ".join(added))
    if m is not None:
        check(
            named(mp, "Service", m.group(3)) is None and "chorus-postgres" not in m.group(3),
            f"DATABASE_URL points outside the cluster ({m.group(3)})",
        )


def main() -> int:
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    base, mon, mr, rc, ap, mp = (load(p) for p in sys.argv[1:])
    print(f"kubernetes-validate {kubernetes_validate.__version__}")
    validate_schemas("base", base)
    validate_schemas("monitoring overlay", mon)
    validate_schemas("managed-redis overlay", mr)
    validate_schemas("redis-cluster overlay", rc)
    validate_schemas("archive-postgres overlay", ap)
    validate_schemas("managed-postgres overlay", mp)
    canary(base)
    check_base(base)
    check_monitoring(base, mon)
    check_managed_redis(base, mr)
    here = os.path.dirname(os.path.abspath(__file__))
    check_redis_cluster(base, rc, os.path.join(here, "overlays", "redis-cluster"))
    check_archive_postgres(base, ap)
    check_managed_postgres(base, mp)
    print("the archive is optional")
    for label, docs in (("base", base), ("monitoring", mon), ("managed-redis", mr), ("redis-cluster", rc)):
        check_no_archive(label, docs)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all manifest checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
