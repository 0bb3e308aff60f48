#!/usr/bin/env bash
# Prints the criterion results of the `stages` bench as a Markdown table: mean time per iteration,
# and per event (ns/event) or MB/s, from target/criterion/<group>/<bench>/new/*.json.
# Usage: benches/stage-table.sh [CRITERION_DIR]   (run `cargo bench -p switchyard-benches --bench stages` first)
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")/.." && pwd)/target/criterion}"
python3 - "$DIR" <<'PY'
import json, os, sys
root = sys.argv[1]
groups = ["decode", "enrich", "sanitize", "pii_scan", "rollout", "encode", "log_append", "pipeline"]
print("| stage | bench | time / iteration (mean) | per event | throughput |")
print("|---|---|---:|---:|---:|")
for group in groups:
    base = os.path.join(root, group)
    if not os.path.isdir(base):
        continue
    for dirpath, _, files in sorted(os.walk(base)):
        if not dirpath.endswith(os.sep + "new") or "estimates.json" not in files:
            continue
        bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
        mean = json.load(open(os.path.join(dirpath, "estimates.json")))["mean"]["point_estimate"]
        throughput = bench.get("throughput") or {}
        name = bench["full_id"].split("/", 1)[1]
        time = f"{mean/1e3:,.1f} µs" if mean >= 1e3 else f"{mean:,.0f} ns"
        if "Elements" in throughput:
            n = throughput["Elements"]
            print(f"| {group} | {name} | {time} | {mean/n:,.0f} ns | {n/mean*1e9/1e3:,.0f} k events/s |")
        elif "Bytes" in throughput:
            b = throughput["Bytes"]
            print(f"| {group} | {name} | {time} | | {b/mean*1e9/1e6:,.1f} MB/s |")
        else:
            print(f"| {group} | {name} | {time} | | |")
PY
