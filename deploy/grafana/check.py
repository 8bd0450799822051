#!/usr/bin/env python3
"""Checks the Grafana dashboard against PromQL and against what chorus exports.

    deploy/grafana/check.py DASHBOARD.json TELEMETRY.rs OPERATIONS.md

deploy/check.sh runs it. Standard library only, plus `promtool` on PATH.

1. The dashboard's shape: a `datasource` variable of type datasource
   (prometheus), `job` and `instance` variables, unique panel ids, every
   panel on the `${datasource}` variable with a grid position and at least
   one query, every row holding panels.
2. Every query (each panel target's `expr`, each variable's
   `label_values(SELECTOR, label)` selector), with the template variables
   replaced by plain values, parses as PromQL: they are written as
   recording rules into a temporary rules file and `promtool check rules`
   parses it.
3. Every metric a query names is `up` or declared in TELEMETRY.rs (a
   `pub const NAME: &str = "chorus_...";`), histograms only through their
   `_bucket`, `_sum` and `_count` series and `_bucket` only on a histogram
   (the type is the one the constant's doc comment ends with).
4. Every label a query groups, matches or joins on (`by`, `without`, `on`,
   `ignoring`, `group_left`/`group_right`, `{label=...}`) and every
   `{{label}}` of its legend is one the metrics it names carry: their labels
   in the metrics table of OPERATIONS.md, plus `instance` and `job` (added
   by the scrape) and `le` (histogram buckets).

Exits 1 on the first kind of failure, naming the panel and the query.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

# Grafana's built-in variables and the dashboard's own, as plain values a
# query could take. A variable not listed here fails the check.
VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "datasource": "prometheus",
    "job": "chorus",
    "instance": "chorus1:8080",
    "node": "chorus1",
}
VAR = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")

# Not metric names: PromQL keywords and the words of a vector matching.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2",
}
# Metrics Prometheus itself attaches to every scrape.
SCRAPE_METRICS = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

errors: list[str] = []


def fail(message: str) -> None:
    errors.append(message)
    print(f"  FAIL  {message}")


def declared_metrics(telemetry: str) -> dict[str, str]:
    """name -> type (counter, gauge, histogram) from the consts and their docs."""
    metrics: dict[str, str] = {}
    doc: list[str] = []
    for line in open(telemetry, encoding="utf-8"):
        stripped = line.strip()
        if stripped.startswith("///"):
            doc.append(stripped[3:].strip())
            continue
        m = re.match(r'pub const \w+: &str = "(chorus_\w+)";', stripped)
        if m:
            text = " ".join(doc)
            found = re.findall(r"\((counter|gauge|histogram)\b", text)
            metrics[m.group(1)] = found[-1] if found else "unknown"
        doc = []
    return metrics


def documented_labels(operations: str) -> dict[str, set[str]]:
    """name -> labels, from the `| metric | type | labels | meaning |` table."""
    labels: dict[str, set[str]] = {}
    for m in re.finditer(r"^\| `(chorus_\w+)` \|[^|]*\|([^|]*)\|", open(operations, encoding="utf-8").read(), re.M):
        labels.setdefault(m.group(1), set()).update(re.findall(r"`(\w+)`", m.group(2)))
    return labels


def labels_named(expr: str) -> set[str]:
    """Labels an expression groups by, joins on or matches."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    found: set[str] = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", s):
        found.update(w for w in re.findall(r"[A-Za-z_]\w*", m.group(1)))
    for m in re.finditer(r"\{([^{}]*)\}", s):
        found.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    return found


def substitute(expr: str, where: str) -> str:
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in VALUES:
            fail(f"{where}: unknown template variable ${name} in {expr!r}")
            return "x"
        return VALUES[name]

    return VAR.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a (parsed) PromQL expression selects."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def check_name(name: str, declared: dict[str, str], where: str) -> None:
    if name in SCRAPE_METRICS:
        return
    if name in declared:
        if declared[name] == "histogram":
            fail(f"{where}: {name} is a histogram: query {name}_bucket, _sum or _count")
        return
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in declared:
            if declared[base] != "histogram":
                fail(f"{where}: {name}: {base} is a {declared[base]}, not a histogram")
            return
    fail(f"{where}: {name} is not a metric chorus exports (src/telemetry.rs) nor `up`")


def walk(panels: list[dict]):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    dashboard_path, telemetry, operations = sys.argv[1:]
    try:
        with open(dashboard_path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"  FAIL  {dashboard_path}: {e}")
        return 1
    declared = declared_metrics(telemetry)
    documented = documented_labels(operations)
    if len(declared) < 10:
        fail(f"{telemetry}: found only {len(declared)} metric constants")
    unknown_type = sorted(n for n, t in declared.items() if t == "unknown")
    if unknown_type:
        fail(f"{telemetry}: no (counter|gauge|histogram) in the doc comment of {', '.join(unknown_type)}")

    print(f"  {dashboard_path}: {dash.get('title')!r}, uid {dash.get('uid')}, schemaVersion {dash.get('schemaVersion')}")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        fail("schemaVersion missing or older than 36 (Grafana 9)")
    if not dash.get("uid"):
        fail("the dashboard has no uid (provisioning needs a stable one)")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        fail("no `datasource` variable of type datasource, query prometheus")
    for name in ("job", "instance"):
        if name not in variables:
            fail(f"no `{name}` variable")

    queries: list[tuple[str, str]] = []  # (where, expression with variables replaced)
    legends: dict[str, str] = {}  # where -> legendFormat
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        if (v.get("datasource") or {}).get("uid") != "${datasource}":
            fail(f"variable {name}: datasource is not the ${{datasource}} variable")
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q, re.S)
        if not m:
            fail(f"variable {name}: not label_values(SELECTOR, label): {q!r}")
            continue
        queries.append((f"variable {name}", substitute(m.group(1), f"variable {name}")))

    ids: dict[int, str] = {}
    panels = list(walk(dash.get("panels", [])))
    rows: list[str] = []
    top = dash.get("panels", [])
    for i, p in enumerate(top):
        if p.get("type") == "row":
            rows.append(p.get("title", ""))
            nxt = top[i + 1] if i + 1 < len(top) else None
            if not p.get("panels") and (nxt is None or nxt.get("type") == "row"):
                fail(f"row {p.get('title')!r} holds no panels")
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            fail(f"{where}: id used by {ids[p['id']]} too")
        ids[p.get("id")] = where
        if "gridPos" not in p:
            fail(f"{where}: no gridPos")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            fail(f"{where}: datasource is not the ${{datasource}} variable")
        targets = p.get("targets") or []
        if not targets:
            fail(f"{where}: no queries")
        for t in targets:
            if (t.get("datasource") or {}).get("uid", "${datasource}") != "${datasource}":
                fail(f"{where} {t.get('refId')}: datasource is not the ${{datasource}} variable")
            expr = t.get("expr", "")
            if not expr.strip():
                fail(f"{where} {t.get('refId')}: empty expr")
                continue
            if "__name__" in expr:
                fail(f"{where} {t.get('refId')}: selects by __name__ (names cannot be checked)")
            queries.append((f"{where} {t.get('refId')}", substitute(expr, where)))
            legends[f"{where} {t.get('refId')}"] = t.get("legendFormat", "")
    print(f"  rows: {', '.join(rows)}")
    print(f"  {len(panels) - len(rows)} panels, {len(queries)} queries (variables included)")

    # 2. promtool parses every query, as a recording rule.
    with tempfile.TemporaryDirectory(prefix="chorus-grafana-check.") as tmp:
        rules = os.path.join(tmp, "dashboard-queries.yml")
        with open(rules, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for n, (where, expr) in enumerate(queries):
                # JSON strings are valid YAML double-quoted scalars.
                f.write(f"      - record: dashboard:query_{n}\n        expr: {json.dumps(expr)}\n")
        run = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
        if run.returncode != 0:
            output = run.stdout + run.stderr
            for n, (where, expr) in enumerate(queries):
                if re.search(rf"dashboard:query_{n}\b", output) or f'"{expr}"' in output:
                    print(f"  {where}: {expr}")
            print(output.rstrip())
            fail("promtool check rules: a query does not parse (above)")
        else:
            print(f"  promtool check rules: all {len(queries)} queries parse")

    # 3. Every metric named is exported.
    used: set[str] = set()
    for where, expr in queries:
        for name in sorted(metric_names(expr)):
            check_name(name, declared, where)
            used.add(re.sub(r"_(bucket|sum|count)$", "", name) if name not in declared else name)
    print(f"  metrics used: {', '.join(sorted(used))}")

    # 4. Every label used is one those metrics carry.
    undocumented = sorted(n for n in used if n not in documented and n not in SCRAPE_METRICS)
    if undocumented:
        fail(f"{operations}: the metrics table lacks {', '.join(undocumented)} (their labels are unknown)")
    checked = 0
    for where, expr in queries:
        bases = {re.sub(r"_(bucket|sum|count)$", "", n) if n not in declared else n for n in metric_names(expr)}
        allowed = {"instance", "job", "le"}.union(*(documented.get(b, set()) for b in bases))
        named = labels_named(expr) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legends.get(where, "")))
        for label in sorted(named - allowed):
            fail(f"{where}: label {label!r} is not one of {', '.join(sorted(allowed))} ({', '.join(sorted(bases))}; OPERATIONS.md)")
        checked += len(named)
    print(f"  {checked} label uses: each one a label of the metrics queried (or instance, job, le)")
    absent = sorted(set(declared) - used)
    if absent:
        print(f"  declared in {telemetry} but not on the dashboard: {', '.join(absent)}")
    else:
        print(f"  every metric declared in {telemetry} is on the dashboard")

    if errors:
        print(f"deploy/grafana/check.py: {len(errors)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
