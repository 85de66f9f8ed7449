#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker daemon, compose plugin or
# cluster is needed, and none is used):
#   - deploy/compose.yaml parses; every built service names a target that
#     deploy/docker/Dockerfile defines; quantrac services get their config
#     through QUANTRAC_<SERVICE>__ variables; secrets come from the
#     environment, never from the file;
#   - deploy/docker/Dockerfile: every service stage has a HEALTHCHECK, and
#     the runtime runs as a non-root user;
#   - the Kubernetes manifests render (`kubectl kustomize deploy`, when
#     kubectl is installed), and every Deployment has /health probes,
#     resource requests, a non-root security context and no literal secret;
#   - the Grafana dashboards are JSON, use provisioned data sources, and
#     every Prometheus metric they query is one the code exports.
set -euo pipefail
cd "$(dirname "$0")/.."
rendered=""
if command -v kubectl >/dev/null 2>&1; then
  rendered=$(mktemp)
  kubectl kustomize deploy >"$rendered"
else
  echo "check-deploy: kubectl not installed; the manifests are checked unrendered" >&2
fi
python3 - "$rendered" <<'PY'
import glob, json, re, sys, subprocess
import yaml

problems = []
def bad(msg): problems.append(msg)

# Dockerfile stages.
dockerfile = open("deploy/docker/Dockerfile").read()
stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.M)
services = ["ingest", "processor", "alerting", "query", "console", "forward"]
for s in services:
    if s not in stages:
        bad(f"Dockerfile: no stage {s}")
    body = dockerfile.split(f" AS {s}\n", 1)[-1].split("\nFROM ", 1)[0]
    if "HEALTHCHECK" not in body:
        bad(f"Dockerfile: stage {s} has no HEALTHCHECK")
runtime = dockerfile.split(" AS runtime\n", 1)[-1].split("\nFROM ", 1)[0]
if not re.search(r"^USER (?!0\b|root\b)\S+", runtime, re.M):
    bad("Dockerfile: the runtime stage does not switch to a non-root USER")

# Compose.
compose = yaml.safe_load(open("deploy/compose.yaml"))
for name, svc in compose["services"].items():
    build = svc.get("build")
    if isinstance(build, dict) and build.get("target") and build["target"] not in stages:
        bad(f"compose: {name} builds target {build['target']}, not in the Dockerfile")
    for k, v in (svc.get("environment") or {}).items():
        if name in services and not k.startswith(f"QUANTRAC_{name.upper()}__"):
            bad(f"compose: {name} sets {k}, not a QUANTRAC_{name.upper()}__ variable")
        if re.search(r"PASSWORD|SECRET", k) and "${" not in str(v):
            bad(f"compose: {name}.{k} holds a literal secret")
        if k.endswith("DATABASE_URL") and "${" not in str(v):
            bad(f"compose: {name}.{k} holds a literal password")
missing = [s for s in services if s not in compose["services"]]
for extra in ["kafka", "timescaledb", "mosquitto", "prometheus", "grafana"]:
    if extra not in compose["services"]:
        missing.append(extra)
if missing:
    bad(f"compose: services missing: {missing}")

# Kubernetes.
path = sys.argv[1]
docs = []
if path:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
else:
    for f in sorted(glob.glob("deploy/k8s/*.yaml")):
        docs += [d for d in yaml.safe_load_all(open(f)) if d]
deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
for s in services:
    d = deployments.get(s)
    if not d:
        bad(f"k8s: no Deployment {s}")
        continue
    spec = d["spec"]["template"]["spec"]
    if not spec.get("securityContext", {}).get("runAsNonRoot"):
        bad(f"k8s: {s} may run as root")
    for c in spec["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            if c.get(probe, {}).get("httpGet", {}).get("path") != "/health":
                bad(f"k8s: {s} has no {probe} on /health")
        if not c.get("resources", {}).get("requests"):
            bad(f"k8s: {s} has no resource requests")
        for e in c.get("env", []):
            if re.search(r"PASSWORD|SECRET|DATABASE_URL", e["name"]) and "value" in e:
                bad(f"k8s: {s} sets {e['name']} literally (use a secretKeyRef)")
    replicas = d["spec"].get("replicas", 1)
    if replicas < 2 and s != "alerting":
        bad(f"k8s: {s} has {replicas} replica")

# Grafana: JSON, provisioned data sources, metrics the code exports.
code = subprocess.run(["grep", "-rhoE", r"(counter|gauge|histogram)!\(\s*\"[a-z_]+\"", "--include=*.rs",
                       "ingest/src", "processor/src", "alerting/src", "query/src", "console/src", "forward/src", "plumbing/src"],
                      capture_output=True, text=True).stdout
exported = set(re.findall(r"\"([a-z_]+)\"", code))
uids = {d["uid"] for d in yaml.safe_load(open("deploy/grafana/provisioning/datasources/quantrac.yaml"))["datasources"]}
for f in glob.glob("deploy/grafana/dashboards/*.json"):
    dash = json.load(open(f))
    for p in dash["panels"]:
        if p["datasource"]["uid"] not in uids:
            bad(f"{f}: panel {p['title']!r} uses an unknown data source")
        for t in p.get("targets", []):
            for m in re.findall(r"\b((?:ingest|processor|alerting|query|console|forward)_[a-z_]+)", t.get("expr", "")):
                base = re.sub(r"_(bucket|sum|count)$", "", m)
                if base not in exported:
                    bad(f"{f}: panel {p['title']!r} queries {m}, which no service exports")

if problems:
    print("deployment check failed:")
    for p in problems:
        print("  -", p)
    sys.exit(1)
print(f"deployment check passed: {len(stages)} image stages, {len(compose['services'])} compose services, "
      f"{len(docs)} Kubernetes objects{' (rendered)' if path else ''}, "
      f"{len(glob.glob('deploy/grafana/dashboards/*.json'))} dashboards")
PY
