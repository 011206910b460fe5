#!/usr/bin/env bash
# Emulates a slow network between MPI ranks on one machine (needs root and tc from iproute2):
# traffic on loopback ports 46000-46063 is limited to RATE, everything else on lo is left alone.
# Start the ranks with MPI's TCP transport on those ports:
#   bash core/bench/slow_link.sh 1gbit
#   mpirun -np 2 --mca btl tcp,self --mca btl_tcp_if_include lo \
#     --mca btl_tcp_port_min_v4 46000 --mca btl_tcp_port_range_v4 64 deno run -A ...
#   bash core/bench/slow_link.sh off
set -euo pipefail
if [ "${1:-}" = off ]; then
  tc qdisc del dev lo root 2>/dev/null || true
  exit 0
fi
rate=${1:-1gbit}
tc qdisc del dev lo root 2>/dev/null || true
# htb: a fast default class for all loopback traffic, a slow one for the MPI ports.
tc qdisc add dev lo root handle 1: htb default 10
tc class add dev lo parent 1: classid 1:10 htb rate 100gbit
tc class add dev lo parent 1: classid 1:20 htb rate "$rate" ceil "$rate" burst 256kb
for dir in dport sport; do
  tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip "$dir" 46000 0xffc0 flowid 1:20
done
