#!/usr/bin/env bash
# Start a local Dask scheduler + N workers (and a Ray head) on 127.0.0.1, without Docker,
# from the project's .venv. PIDs, logs and addresses go to .cache/cluster-local/.
#
#   cluster/local/start.sh [--workers N] [--threads N] [--memory-limit SIZE]
#                          [--dask-port PORT] [--dashboard-port PORT]
#                          [--ray-port PORT] [--ray-cpus N] [--no-ray]
#   then:  porelab run JOB.yaml --dask "$(cat .cache/cluster-local/dask_address)" \
#                               --ray  "$(cat .cache/cluster-local/ray_address)"
#   stop:  cluster/local/stop.sh
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKERS=2
THREADS=1
MEMORY_LIMIT=2GiB
DASK_PORT=8786
DASHBOARD_PORT=8787
RAY=1
RAY_PORT=6379
RAY_CPUS=""

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --workers) WORKERS="${2:?}"; shift 2 ;;
        --threads) THREADS="${2:?}"; shift 2 ;;
        --memory-limit) MEMORY_LIMIT="${2:?}"; shift 2 ;;
        --dask-port) DASK_PORT="${2:?}"; shift 2 ;;
        --dashboard-port) DASHBOARD_PORT="${2:?}"; shift 2 ;;
        --ray-port) RAY_PORT="${2:?}"; shift 2 ;;
        --ray-cpus) RAY_CPUS="${2:?}"; shift 2 ;;
        --no-ray) RAY=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--workers '$WORKERS' is not a positive integer"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || die "--threads '$THREADS' is not a positive integer"
[[ "$MEMORY_LIMIT" =~ ^[0-9]+(\.[0-9]+)?([KMGT]i?B)?$ ]] || die "--memory-limit '$MEMORY_LIMIT' is not a size like 2GiB"
for port in "$DASK_PORT" "$DASHBOARD_PORT" "$RAY_PORT"; do
    [[ "$port" =~ ^[0-9]+$ ]] || die "port '$port' is not a number"
done
[[ -z "$RAY_CPUS" || "$RAY_CPUS" =~ ^[1-9][0-9]*$ ]] || die "--ray-cpus '$RAY_CPUS' is not a positive integer"
[[ -x "$VENV/bin/python" ]] || die "no virtual environment at $VENV (run 'make install' first)"

mkdir -p "$STATE" "$DASK_TEMPORARY_DIRECTORY" "$XDG_CACHE_HOME" "$MPLCONFIGDIR"
if alive "$STATE/scheduler.pid" || alive "$STATE/ray.pid"; then
    die "a local cluster is already running (state in $STATE); stop it with cluster/local/stop.sh"
fi
rm -f "$STATE"/*.pid "$STATE/scheduler.json" "$STATE/dask_address" "$STATE/ray_address"

# launch NAME CMD...: run CMD in its own session (so stop.sh can end exactly its process
# group), log to $STATE/NAME.log, PID to $STATE/NAME.pid.
launch() {
    local name="$1"
    shift
    setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo "$!" >"$STATE/$name.pid"
}

# Anything that fails from here on leaves nothing running.
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "start failed; stopping what started (logs in $STATE)" >&2
        "$(dirname "${BASH_SOURCE[0]}")/stop.sh" >&2 || true
    fi
}
trap on_exit EXIT

echo "Dask scheduler on 127.0.0.1:$DASK_PORT ..."
launch scheduler "$VENV/bin/python" -m distributed.cli.dask_scheduler \
    --host 127.0.0.1 --port "$DASK_PORT" --dashboard-address "127.0.0.1:$DASHBOARD_PORT" \
    --scheduler-file "$STATE/scheduler.json"
for _ in $(seq 300); do
    [[ -s "$STATE/scheduler.json" ]] && break
    alive "$STATE/scheduler.pid" || die "the Dask scheduler exited: $(tail -n 5 "$STATE/scheduler.log")"
    sleep 0.1
done
[[ -s "$STATE/scheduler.json" ]] || die "the Dask scheduler did not start within 30 s (see $STATE/scheduler.log)"
DASK_ADDRESS="$(sed -n 's/.*"address": *"\([^"]*\)".*/\1/p' "$STATE/scheduler.json" | head -n 1)"
[[ "$DASK_ADDRESS" == tcp://* ]] || die "no scheduler address in $STATE/scheduler.json"

for i in $(seq "$WORKERS"); do
    launch "worker-$i" "$VENV/bin/python" -m distributed.cli.dask_worker \
        --scheduler-file "$STATE/scheduler.json" --host 127.0.0.1 --no-dashboard \
        --nworkers 1 --nthreads "$THREADS" --memory-limit "$MEMORY_LIMIT" \
        --name "local-$i" --local-directory "$DASK_TEMPORARY_DIRECTORY"
done
# Each worker process logs "Registered to: <scheduler>" once it has joined.
for _ in $(seq 600); do
    joined="$(cat "$STATE"/worker-*.log | grep -c "Registered to" || true)"
    [[ "$joined" -ge "$WORKERS" ]] && break
    for f in "$STATE"/worker-*.pid; do
        alive "$f" || die "Dask worker $(basename "$f" .pid) exited: $(tail -n 5 "${f%.pid}.log")"
    done
    sleep 0.1
done
[[ "$joined" -ge "$WORKERS" ]] || die "the Dask workers did not join within 60 s (see $STATE/worker-*.log)"
echo "$DASK_ADDRESS" >"$STATE/dask_address"
echo "Dask: $DASK_ADDRESS, $WORKERS worker(s) x $THREADS thread(s), $MEMORY_LIMIT each"

if [[ "$RAY" == 1 ]]; then
    # Token auth: one token per local cluster, readable only by its owner; never ~/.ray.
    if [[ ! -s "$STATE/ray_auth_token" ]]; then
        (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/ray_auth_token")
    fi
    export RAY_AUTH_MODE=token
    RAY_AUTH_TOKEN="$(<"$STATE/ray_auth_token")"
    export RAY_AUTH_TOKEN
    # Ray keeps unix sockets under its temp dir: their paths must stay under 108 bytes.
    RAY_TMP="$STATE/ray"
    if [[ ${#RAY_TMP} -gt 40 ]]; then
        RAY_TMP="${TMPDIR:-/tmp}/porelab-ray-$(id -u)-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
    fi
    mkdir -p "$RAY_TMP"
    echo "$RAY_TMP" >"$STATE/ray_temp_dir"
    echo "Ray head on 127.0.0.1:$RAY_PORT ..."
    # Switching multi-node mode off makes every Ray service (GCS, raylet, agents, client
    # server) listen on 127.0.0.1 only; no other machine can join this head.
    launch ray env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "$VENV/bin/ray" start --head --block --node-ip-address 127.0.0.1 --port "$RAY_PORT" \
        --include-dashboard false --temp-dir "$RAY_TMP" --disable-usage-stats \
        ${RAY_CPUS:+--num-cpus "$RAY_CPUS"}
    for _ in $(seq 180); do
        (echo >"/dev/tcp/127.0.0.1/$RAY_PORT") 2>/dev/null && break
        alive "$STATE/ray.pid" || die "the Ray head exited: $(tail -n 5 "$STATE/ray.log")"
        sleep 0.5
    done
    (echo >"/dev/tcp/127.0.0.1/$RAY_PORT") 2>/dev/null || die "the Ray head did not start within 90 s (see $STATE/ray.log)"
    echo "127.0.0.1:$RAY_PORT" >"$STATE/ray_address"
    echo "Ray: 127.0.0.1:$RAY_PORT (token in $STATE/ray_auth_token)"
fi

# Environment for a shell that uses this cluster: source .cache/cluster-local/env.sh
{
    echo "export PORELAB_DASK=$DASK_ADDRESS"
    if [[ "$RAY" == 1 ]]; then
        echo "export PORELAB_RAY=127.0.0.1:$RAY_PORT"
        echo "export RAY_AUTH_MODE=token"
        # A driver must use loopback addresses too, or Ray would dial the machine's own IP.
        echo "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
        echo "export RAY_AUTH_TOKEN=\"\$(cat '$STATE/ray_auth_token')\""
    fi
} >"$STATE/env.sh"
trap - EXIT
if [[ "$RAY" == 1 ]]; then
    echo "ready: source $STATE/env.sh && porelab run JOB.yaml --dask \"\$PORELAB_DASK\" --ray \"\$PORELAB_RAY\""
else
    echo "ready: source $STATE/env.sh && porelab run JOB.yaml --dask \"\$PORELAB_DASK\""
fi
