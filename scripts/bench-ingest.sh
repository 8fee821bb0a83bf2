#!/usr/bin/env bash
# Ingestion benchmark: trib-loadgen against `tributary serve` over loopback HTTP.
#
#   scripts/bench-ingest.sh [RUNS] [DURATION_SECS] [encryption]
#
# With `encryption`: each run is the durable server as shipped (encryption at rest on), then the
# same server with TRIBUTARY_UNENCRYPTED_BENCHMARK=1, interleaved; prints both and the cost.
# WARMUP (seconds, default 3) sets the load generator's warm-up: with WARMUP=30 every one of the
# 100,000 generated people has been seen (and has a data key) before measuring starts.
#
# For each of RUNS runs: durable (embedded log, fsync) closed loop, then the ceiling (the same
# server with `storage = "memory"`, persistence switched off), each on a fresh data directory;
# then open loop at half the median durable rate. Prints every run and the medians.
# Run it on an otherwise idle machine; it uses ports 18080-18081 and a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
duration=${2:-20}
mode=${3:-ingest}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet -p trib-cli -p trib-loadgen
bin=target/release

config() { # name port storage
  cat > "$work/$1.toml" <<TOML
version = 1
[server]
listen = "127.0.0.1:$2"
data_dir = "$work/$1-data"
admin_key = "ak_bench"
[log]
storage = "$3"
fsync = true
[[sources]]
name = "bench"
write_key = "wk_bench"
TOML
}
config durable 18080 embedded
config memory 18081 memory

run() { # name port result-file loadgen-args...
  local name=$1 port=$2 out=$3; shift 3
  rm -rf "$work/$name-data"
  env ${SERVER_ENV:-} "$bin/tributary" serve --config "$work/$name.toml" > "$work/server.log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  "$bin/trib-loadgen" --url "http://127.0.0.1:$port" --write-key wk_bench --duration "$duration" --warmup "${WARMUP:-3}" -q --json "$@" > "$out"
  kill -TERM "$server"; wait "$server" || true
}

summary() { # label files...
  python3 - "$@" <<'PY'
import json, statistics, sys
label, files = sys.argv[1], sys.argv[2:]
rows = [json.load(open(f)) for f in files]
for r in rows:
    l = r["latency_ms"]
    print(f"  {label}: {r['events_per_sec']:>9,.0f} events/s  p50 {l['p50']:6.2f} ms  p99 {l['p99']:6.2f} ms  failures {r['failures']}  429s {r['status_429']}  loadgen CPU {100*r['loadgen_cpu_share']:.0f}%")
med = lambda f: statistics.median(f(r) for r in rows)
print(f"  {label} MEDIAN of {len(rows)}: {med(lambda r: r['events_per_sec']):,.0f} events/s  p50 {med(lambda r: r['latency_ms']['p50']):.2f} ms  p99 {med(lambda r: r['latency_ms']['p99']):.2f} ms")
PY
}

if [ "$mode" = encryption ]; then
  for i in $(seq "$runs"); do
    SERVER_ENV= run durable 18080 "$work/encrypted-$i.json"
    SERVER_ENV=TRIBUTARY_UNENCRYPTED_BENCHMARK=1 run durable 18080 "$work/unencrypted-$i.json"
  done
  summary "encrypted (as shipped)" "$work"/encrypted-*.json
  summary "unencrypted" "$work"/unencrypted-*.json
  python3 -c "
import json,statistics,sys
e=statistics.median(json.load(open(f))['events_per_sec'] for f in sys.argv[1].split())
u=statistics.median(json.load(open(f))['events_per_sec'] for f in sys.argv[2].split())
print(f'  cost of encryption at rest: {100*(1-e/u):.1f}% of durable throughput')" "$(ls "$work"/encrypted-*.json | tr '\n' ' ')" "$(ls "$work"/unencrypted-*.json | tr '\n' ' ')"
  exit 0
fi
for i in $(seq "$runs"); do
  run durable 18080 "$work/durable-$i.json"
  run memory 18081 "$work/memory-$i.json"
done
summary durable "$work"/durable-*.json
summary ceiling "$work"/memory-*.json
half=$(python3 -c "import json,statistics,sys; print(int(statistics.median(json.load(open(f))['events_per_sec'] for f in sys.argv[1:])/2))" "$work"/durable-*.json)
for i in $(seq "$runs"); do
  run durable 18080 "$work/open-$i.json" --rate "$half"
done
summary "open loop at $half events/s (durable)" "$work"/open-*.json
python3 -c "
import json,statistics,sys
d=statistics.median(json.load(open(f))['events_per_sec'] for f in sys.argv[1].split())
m=statistics.median(json.load(open(f))['events_per_sec'] for f in sys.argv[2].split())
print(f'  durable / ceiling: {100*d/m:.0f}%')" "$(ls "$work"/durable-*.json | tr '\n' ' ')" "$(ls "$work"/memory-*.json | tr '\n' ' ')"
