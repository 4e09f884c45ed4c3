#!/usr/bin/env bash
# Runs every benchmark in sequence, each against its own throwaway Legato instance, and prints
# each script's figure lines at the end. Full output (stdout: breakdowns and figures; stderr:
# progress) is kept in bench/out/<timestamp>/. Exits non-zero if any script failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out="bench/out/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
scripts=(deploy_to_serving scale_out api_list edge_throughput rollout source_deploy wake_latency edge_logging autoscale_reaction access_log_ingest guard_overhead)
failed=()
for name in "${scripts[@]}"; do
  printf '\033[1m== %s\033[0m\n' "$name" >&2
  if ! "$PY" "bench/$name.py" >"$out/$name.out" 2>"$out/$name.log"; then
    failed+=("$name")
    tail -n 5 "$out/$name.log" >&2
  fi
  cat "$out/$name.out"
done
src_digest=$(find src -name '*.py' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-12)
echo
echo "== figures (full output in $out)"
echo "run: $(date -u +%Y-%m-%dT%H:%M:%SZ) cpus=$(nproc) src_sha256=$src_digest $(git rev-parse --short HEAD 2>/dev/null || true)"
for name in "${scripts[@]}"; do
  grep -h "^$name: " "$out/$name.out" "$out/$name.log" 2>/dev/null || echo "$name: no figures"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
