#!/usr/bin/env bash
# Import benchmark: `tributary import` of a generated CRM CSV with validation and normalization
# (email, phone, names, country, timestamp, number, boolean; the source's gate), durable
# embedded log. Prints rows/s and peak RSS per run, then the medians.
#
#   scripts/bench-import.sh [ROWS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
runs=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet -p trib-cli
cargo run --release --quiet -p trib-sources --example gen_crm_csv -- "$rows" "$work/crm.csv"
ls -l "$work/crm.csv" | awk '{printf "input: %s rows, %.0f MB\n", '"$rows"', $5/1e6}'

cat > "$work/tributary.toml" <<'TOML'
version = 1
[server]
data_dir = "data"
[[sources]]
name = "crm"
write_key = "wk_bench_crm"
default_region = "US"
[sources.import]
kind = "identify"
[[sources.import.columns]]
column = "id"
target = "user_id"
required = true
[[sources.import.columns]]
column = "email"
target = "email"
normalize = "email"
on_error = "drop"
[[sources.import.columns]]
column = "first_name"
target = "traits.first_name"
normalize = "name"
[[sources.import.columns]]
column = "last_name"
target = "traits.last_name"
normalize = "name"
[[sources.import.columns]]
column = "phone"
target = "phone"
normalize = "phone"
on_error = "drop"
[[sources.import.columns]]
column = "country"
target = "traits.country"
normalize = "country"
on_error = "drop"
[[sources.import.columns]]
column = "plan"
target = "traits.plan"
[[sources.import.columns]]
column = "created_at"
target = "traits.created_at"
type = "timestamp"
[[sources.import.columns]]
column = "lifetime_value"
target = "traits.lifetime_value"
type = "number"
[[sources.import.columns]]
column = "address"
target = "traits.address.street"
normalize = "trim"
[[sources.import.columns]]
column = "marketing_opt_in"
target = "traits.marketing_opt_in"
type = "boolean"
TOML

for i in $(seq "$runs"); do
  rm -rf "$work/data"
  ( cd "$work" && /usr/bin/time -f "%e %M" -o "$work/time-$i" \
      "$OLDPWD/target/release/tributary" import --config tributary.toml --source crm crm.csv ) > "$work/report-$i"
  read -r seconds kib < "$work/time-$i"
  echo "run $i: $(head -1 "$work/report-$i" | sed 's/^[^:]*: //'); wall ${seconds}s, peak RSS $((kib / 1024)) MB"
  echo "$seconds $kib" >> "$work/all"
done
python3 - "$rows" "$work/all" <<'PY'
import statistics, sys
rows = int(sys.argv[1])
runs = [tuple(map(float, line.split())) for line in open(sys.argv[2])]
print(f"MEDIAN of {len(runs)}: {rows / statistics.median(s for s, _ in runs):,.0f} rows/s (whole command, incl. start and SHA-256 pass), "
      f"peak RSS {statistics.median(k for _, k in runs) / 1024:.0f} MB")
PY
