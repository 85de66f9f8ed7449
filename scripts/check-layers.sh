#!/usr/bin/env bash
# Fails if the crate graph disagrees with the layers in ARCHITECTURE.md:
#   - a service crate (ingest, processor, alerting, query, forward, console) depends on another
#     service crate, in any dependency kind (normal, dev or build);
#   - a shared crate (proto, db, plumbing) depends on a service crate or on
#     the single-node crate;
#   - the contract crate depends on anything of the project's;
#   - the test-support crate depends on more than the contract and the
#     plumbing (a service's tests must not pull in another service through it).
# Reads `cargo metadata`, so it sees exactly what cargo builds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps --offline 2>/dev/null >/tmp/quantrac-metadata.json ||
  cargo metadata --format-version 1 --no-deps >/tmp/quantrac-metadata.json
python3 - /tmp/quantrac-metadata.json <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
services = {"quantrac-ingest", "quantrac-processor", "quantrac-alerting", "quantrac-query", "quantrac-forward", "quantrac-console"}
shared = {"quantrac-proto", "quantrac-db", "quantrac-plumbing", "quantrac-testkit"}
composers = {"quantrac-node"}
allowed_below = {
    "quantrac-proto": set(),
    "quantrac-db": {"quantrac-proto", "quantrac-plumbing"},
    "quantrac-plumbing": set(),
    "quantrac-testkit": {"quantrac-proto", "quantrac-plumbing"},
}
problems = []
for pkg in meta["packages"]:
    name = pkg["name"]
    deps = {(d["name"], d.get("kind") or "normal") for d in pkg["dependencies"] if d["name"].startswith("quantrac-")}
    for dep, kind in sorted(deps):
        if name in services and dep in services:
            problems.append(f"{name} depends on service {dep} ({kind}): services sit side by side")
        if name in services and dep in composers:
            problems.append(f"{name} depends on {dep} ({kind}), which composes the services")
        if name in shared and dep not in allowed_below[name]:
            problems.append(f"{name} depends on {dep} ({kind}): a shared crate only uses the layers below it")
if problems:
    print("layer check failed:")
    for p in problems:
        print("  -", p)
    sys.exit(1)
names = sorted(p["name"] for p in meta["packages"])
print(f"layer check passed: {len(names)} crates, no service depends on another")
PY
