#!/usr/bin/env python3
"""scripts/deploy/check.py: renders deploy/kubernetes and proves what it renders, offline.

Run by scripts/check-deploy (which provides kubectl and kubernetes-validate, pinned, from
PyPI). For every overlay under deploy/kubernetes/overlays/:

  render     `kubectl kustomize <overlay>`: the objects an `apply -k` would send.
  schemas    every built-in object against the Kubernetes 1.37 OpenAPI schemas
             (kubernetes-validate, strict: an unknown or misspelt field is an error); the
             Prometheus Operator objects against the CRDs in deploy/kubernetes/schemas/, made
             strict the same way.
  policy     what the schemas cannot say: resources, probes, a locked-down securityContext,
             secrets only as files, a PodDisruptionBudget per Deployment, Services and the
             ServiceMonitor selecting real pods and ports, a default-deny NetworkPolicy, and
             the migration owner's Secret mounted by the migrate Job only.
  config     with --leadq BIN: every container's environment (its ConfigMaps and env, its
             volumes laid out in a temporary root with generated secrets and a CA) checked by
             `leadq config check <api|worker|migrate>`, the real loader; and every job kind of
             the catalogue run by exactly one worker group.

And once: deploy/kubernetes/base/monitoring/prometheusrule.yaml is alerts/*.yml as
PrometheusRules (--write regenerates it; otherwise a stale copy is an error) and the rules
in it pass `promtool check rules`.

Exit status 0 when everything holds, 1 listing every problem found.
"""

import argparse
import base64
import copy
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
RULES_FILE = DEPLOY / "base" / "monitoring" / "prometheusrule.yaml"
K8S_VERSION = "1.37.0"
ROLES = ("api", "worker", "migrate")


class Problems(list):
    def add(self, where, what):
        self.append(f"{where}: {what}")


# --- render ---------------------------------------------------------------------------------

def render(kubectl, overlay):
    out = subprocess.run([kubectl, "kustomize", str(overlay)], check=True,
                         capture_output=True, text=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- the PrometheusRules from alerts/ -------------------------------------------------------

def rules_text():
    """alerts/*.yml, one PrometheusRule per file, groups unchanged."""
    head = ("# GENERATED from alerts/*.yml by `scripts/check-deploy --write`; do not edit (CI fails\n"
            "# when this differs from what alerts/ would generate). One PrometheusRule per file.\n")
    docs = []
    for path in sorted((ROOT / "alerts").glob("*.yml")):
        groups = yaml.safe_load(path.read_text())["groups"]
        docs.append({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": f"leadq-{path.stem}",
                         "labels": {"app.kubernetes.io/component": "monitoring"},
                         "annotations": {"leadq.io/source": f"alerts/{path.name}"}},
            "spec": {"groups": groups},
        })
    body = yaml.safe_dump_all(docs, sort_keys=False, width=100, allow_unicode=True,
                              explicit_start=True)
    return head + body


def check_rules(write, problems):
    text = rules_text()
    if write:
        RULES_FILE.write_text(text)
    elif not RULES_FILE.exists() or RULES_FILE.read_text() != text:
        problems.add(RULES_FILE.relative_to(ROOT),
                     "stale: alerts/ changed; run scripts/check-deploy --write and commit it")
    promtool = shutil.which("promtool")
    if not promtool:
        problems.add("promtool", "not installed (the PrometheusRule groups are not checked)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for doc in yaml.safe_load_all(text):
            f = Path(tmp) / f"{doc['metadata']['name']}.yml"
            f.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
            files.append(str(f))
        r = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
        if r.returncode != 0:
            problems.add("promtool check rules", (r.stdout + r.stderr).strip())


# --- schemas --------------------------------------------------------------------------------

def strict(schema):
    """A CRD schema that, like `kubernetes-validate --strict`, refuses unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(schema)
    # apiVersion, kind and metadata are the API server's; only their presence is checked.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def crd_schemas():
    found = {}
    for path in sorted((DEPLOY / "schemas").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            found[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    return found


def check_schemas(where, objs, crds, problems):
    for obj in objs:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in crds:
            v = jsonschema.Draft7Validator(crds[key])
            for e in sorted(v.iter_errors(obj), key=lambda e: list(e.path)):
                path = "/".join(str(p) for p in e.path)
                problems.add(f"{where} {name_of(obj)}", f"{path}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.utils.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            problems.add(f"{where} {name_of(obj)}", f"{path}: {e.message}")
        except kubernetes_validate.utils.SchemaNotFoundError:
            problems.add(f"{where} {name_of(obj)}", f"no schema for {key} (add its CRD?)")


# --- policy ---------------------------------------------------------------------------------

def secret_settings():
    """The settings leadq reads as secrets (platform/src/config: `secret("X")`, keyrings)."""
    names = set()
    for path in (ROOT / "platform" / "src" / "config").glob("*.rs"):
        names.update(re.findall(r'(?:secret|keyring)\(\s*"([A-Z0-9_]+)"', path.read_text()))
    return names


def workloads(objs):
    """(object, pod spec) of every Deployment and Job."""
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            yield o, o["spec"]["template"]["spec"]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_policy(where, objs, problems):
    secret_names = secret_settings()
    if len(secret_names) < 5:
        problems.add("policy", f"found only {sorted(secret_names)} as secret settings")
    for o in objs:
        # The phased apply (deploy/kubernetes/README.md) selects objects by component.
        if "app.kubernetes.io/component" not in o["metadata"].get("labels", {}):
            problems.add(f"{where} {name_of(o)}", "has no app.kubernetes.io/component label")
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs
                  if o["kind"] == "ConfigMap"}
    for name, data in configmaps.items():
        for key in data:
            if key in secret_names:
                problems.add(f"{where} ConfigMap/{name}", f"{key} is a secret: use {key}_FILE")
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    for obj, pod in workloads(objs):
        at = f"{where} {name_of(obj)}"
        if pod.get("automountServiceAccountToken") is not False:
            problems.add(at, "mounts a service-account token")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.add(at, "pod securityContext.runAsNonRoot is not true")
        mounted = {s.get("secret", {}).get("name") or s.get("secret", {}).get("secretName")
                   for v in pod.get("volumes", [])
                   for s in v.get("projected", {}).get("sources", []) + [v]
                   if "secret" in s}
        mounted.discard(None)
        role = obj["metadata"]["labels"].get("app.kubernetes.io/component")
        if role == "migrate" and mounted != {"leadq-migrate"}:
            problems.add(at, f"the migrate Job must mount leadq-migrate only, not {mounted}")
        if role != "migrate" and "leadq-migrate" in mounted:
            problems.add(at, "mounts the migration owner's Secret")
        for c in pod["containers"]:
            cat = f"{at} container {c['name']}"
            res = c.get("resources", {})
            for part, keys in (("requests", ("cpu", "memory")), ("limits", ("cpu", "memory"))):
                for k in keys:
                    if k not in res.get(part, {}):
                        problems.add(cat, f"no resources.{part}.{k}")
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.add(cat, "root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.add(cat, "allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.add(cat, "capabilities are not all dropped")
            for e in c.get("env", []):
                if e["name"] in secret_names:
                    problems.add(cat, f"{e['name']} is a secret: use {e['name']}_FILE")
            if obj["kind"] == "Deployment":
                if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                    problems.add(cat, "liveness probe is not GET /healthz")
                if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                    problems.add(cat, "readiness probe is not GET /readyz")
    for d in deployments:
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not matches(d["spec"]["selector"]["matchLabels"], labels):
            problems.add(f"{where} {name_of(d)}", "its selector does not match its pods")
        covering = [p for p in pdbs if matches(p["spec"]["selector"]["matchLabels"], labels)]
        if len(covering) != 1:
            problems.add(f"{where} {name_of(d)}",
                         f"{len(covering)} PodDisruptionBudgets select its pods (want 1)")
    pods = [(d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"])
            for d in deployments]
    services = [o for o in objs if o["kind"] == "Service"]
    for s in services:
        selected = [spec for labels, spec in pods if matches(s["spec"]["selector"], labels)]
        if not selected:
            problems.add(f"{where} {name_of(s)}", "selects no pods")
        ports = {p.get("name") for spec in selected for c in spec["containers"]
                 for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            if isinstance(p["targetPort"], str) and p["targetPort"] not in ports:
                problems.add(f"{where} {name_of(s)}", f"no container port {p['targetPort']}")
    for m in (o for o in objs if o["kind"] == "ServiceMonitor"):
        sel = m["spec"]["selector"]["matchLabels"]
        scraped = sorted(s["metadata"]["name"] for s in services
                         if matches(sel, s["metadata"].get("labels", {}))
                         and any(p.get("name") == "metrics" for p in s["spec"]["ports"]))
        # alerts/ name these jobs (job="leadq-api", job="leadq-worker").
        if scraped != ["leadq-api", "leadq-worker"]:
            problems.add(f"{where} {name_of(m)}", f"scrapes {scraped}")
    denies = [n for n in objs if n["kind"] == "NetworkPolicy" and n["spec"]["podSelector"] == {}
              and set(n["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
              and not n["spec"].get("ingress") and not n["spec"].get("egress")]
    if not denies:
        problems.add(where, "no default-deny NetworkPolicy")


# --- config, through the real loader --------------------------------------------------------

def generated_secret(key):
    """A well-formed value for each key of the documented Secrets (deploy/kubernetes/README)."""
    pw = secrets.token_urlsafe(24)
    keyring = "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    values = {
        "database-url": f"postgres://leadq:{pw}@postgres.internal:5432/leadq",
        "migration-database-url": f"postgres://leadq_owner:{pw}@postgres.internal:5432/leadq",
        "redis-url": f"rediss://:{pw}@redis.internal:6379/",
        "signing-keys": keyring, "data-keys": keyring, "audit-keys": keyring,
        "pii-index-keys": keyring,
        "operator-tokens": "oncall:" + secrets.token_hex(24),
        "token": secrets.token_hex(24), "metrics-token": secrets.token_hex(24),
        "sentry-dsn": "https://0123456789abcdef@o1.ingest.sentry.io/1",
        "alert-telegram-bot-token": "123456789:" + secrets.token_urlsafe(26),
    }
    return values.get(key)


def make_ca(path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=leadq check-deploy CA", "-keyout", os.devnull, "-out", str(path)],
                   check=True, capture_output=True)


def lay_out(root, pod, mounts, problems, at):
    """Writes the container's volumes under `root`; returns mount path -> host path."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    placed = {}
    for m in mounts:
        host = Path(root) / m["mountPath"].lstrip("/")
        host.mkdir(parents=True, exist_ok=True)
        placed[m["mountPath"]] = host
        v = volumes[m["name"]]
        sources = v.get("projected", {}).get("sources", [])
        if "secret" in v:
            sources = [{"secret": v["secret"]}]
        for s in sources:
            for item in s.get("secret", {}).get("items", []):
                value = generated_secret(item["key"])
                if value is None:
                    problems.add(at, f"secret key {item['key']!r} is not documented "
                                     "(deploy/kubernetes/README.md, scripts/deploy/check.py)")
                    continue
                (host / item["path"]).write_text(value + "\n")
        if v.get("configMap", {}).get("name") == "leadq-store-ca":
            make_ca(host / "ca.pem")
    return placed


def check_config(where, objs, leadq, problems):
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs
                  if o["kind"] == "ConfigMap"}
    groups, catalogue = {}, None
    with tempfile.TemporaryDirectory() as root:
        for obj, pod in workloads(objs):
            for c in pod["containers"]:
                at = f"{where} {name_of(obj)} container {c['name']}"
                role = c["args"][0]
                if role not in ROLES:
                    problems.add(at, f"runs {role!r}, not one of {ROLES}")
                    continue
                env = {}
                for ref in c.get("envFrom", []):
                    env.update(configmaps[ref["configMapRef"]["name"]])
                env.update({e["name"]: e["value"] for e in c.get("env", [])})
                placed = lay_out(Path(root) / obj["metadata"]["name"], pod,
                                 c.get("volumeMounts", []), problems, at)
                for k, v in env.items():
                    for mount, host in placed.items():
                        if v.startswith(mount + "/"):
                            env[k] = str(host) + v[len(mount):]
                env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
                r = subprocess.run([leadq, "config", "check", role], env=env,
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    problems.add(at, (r.stderr or r.stdout).strip())
                elif role == "worker":
                    groups[obj["metadata"]["name"]] = env.get("LEADQ_WORKER_KINDS", "")
                    if catalogue is None:  # every kind: the same environment, kinds unset
                        everything = {k: v for k, v in env.items() if k != "LEADQ_WORKER_KINDS"}
                        out = subprocess.run([leadq, "config", "check", "worker"],
                                             env=everything, capture_output=True,
                                             text=True).stdout
                        catalogue = re.search(r"worker of (\S+)", out).group(1).split(",")
    if not groups or catalogue is None:
        problems.add(where, "no worker Deployment whose configuration loads")
        return
    run_by = {}
    for group, kinds in groups.items():
        for kind in filter(None, (k.strip() for k in kinds.split(","))):
            run_by.setdefault(kind, []).append(group)
    for kind in catalogue:
        if len(run_by.get(kind, [])) != 1:
            problems.add(where, f"kind {kind} is run by {run_by.get(kind, [])} (want one group)")
    print(f"  {where}: " + "; ".join(f"{g} runs {k}" for g, k in sorted(groups.items())))


# --- main -----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--leadq", help="a leadq binary: also check every container's config")
    ap.add_argument("--write", action="store_true", help="regenerate prometheusrule.yaml")
    args = ap.parse_args()

    problems = Problems()
    check_rules(args.write, problems)
    crds = crd_schemas()
    overlays = sorted(p for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
    for overlay in overlays:
        where = str(overlay.relative_to(ROOT))
        try:
            objs = render(args.kubectl, overlay)
        except subprocess.CalledProcessError as e:
            problems.add(where, f"kustomize failed: {e.stderr.strip()}")
            continue
        kinds = sorted({o["kind"] for o in objs})
        print(f"  {where}: {len(objs)} objects ({', '.join(kinds)})")
        check_schemas(where, objs, crds, problems)
        check_policy(where, objs, problems)
        if args.leadq:
            check_config(where, objs, args.leadq, problems)
    if problems:
        print(f"check-deploy: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"check-deploy: {len(overlays)} overlays rendered, valid against Kubernetes "
          f"{K8S_VERSION} and the Prometheus Operator CRDs, policy and "
          f"{'config ' if args.leadq else ''}checks pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
