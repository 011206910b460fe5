#!/usr/bin/env bash
# Training step time with and without overlap (docs/benchmarks.md, "Overlap"): 2 MPI ranks on
# this machine, the tiny UNet and one 4x wider, in pairs that alternate which setting runs first;
# then the same over an emulated 1 Gb/s link (core/bench/slow_link.sh, needs root). One JSON line
# per run on stdout: the label, the load average at the end, bench_dist.ts's result.
set -uo pipefail
cd "$(dirname "$0")/../.."
net="--mca btl tcp,self --mca btl_tcp_if_include lo --mca btl_tcp_port_min_v4 46000 --mca btl_tcp_port_range_v4 64"
root=$([ "$(id -u)" = 0 ] && echo --allow-run-as-root)
run() { # label mpirun-options bench-options...
  local label=$1 extra=$2
  shift 2
  local line
  # shellcheck disable=SC2086 # the option strings are meant to split
  line=$(mpirun $root --oversubscribe $extra -np 2 deno run -A core/bench/bench_dist.ts step "$@" 2>&1 |
    grep '"bench"')
  echo "{\"label\":\"$label\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"result\":${line:-null}}"
}
pairs() { # label mpirun-options pairs bench-options...
  local label=$1 extra=$2 n=$3
  shift 3
  for i in $(seq 1 "$n"); do
    if [ $((i % 2)) = 1 ]; then
      run "$label" "$extra" "$@"
      run "$label" "$extra" "$@" --no_overlap
    else
      run "$label" "$extra" "$@" --no_overlap
      run "$label" "$extra" "$@"
    fi
  done
}
pairs shm-tiny-64k "" 2 --steps 30 --warm 6 --bucket_mb 0.0625
pairs shm-tiny-25m "" 2 --steps 30 --warm 6
pairs shm-w4-4m "" 3 --steps 12 --warm 3 --width 4 --bucket_mb 4
pairs shm-w4-25m "" 2 --steps 12 --warm 3 --width 4
bash core/bench/slow_link.sh 1gbit
trap 'bash core/bench/slow_link.sh off' EXIT
pairs net1g-w4-4m "$net" 3 --steps 12 --warm 3 --width 4 --bucket_mb 4
pairs net1g-w4-25m "$net" 2 --steps 12 --warm 3 --width 4
