#!/usr/bin/env bash
# Stop the local cluster that cluster/local/start.sh started: each process group it
# launched (Ray head, Dask workers, Dask scheduler) gets SIGTERM, then SIGKILL after 20 s.
# Only the PIDs recorded in .cache/cluster-local/*.pid are touched.
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ -d "$STATE" ]] || { echo "no local cluster state in $STATE"; exit 0; }

# group_alive PGID: true while any process of that group exists.
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

# Ray first (its workers may hold Dask clients), then the workers, the scheduler last.
pidfiles=()
[[ -f "$STATE/ray.pid" ]] && pidfiles+=("$STATE/ray.pid")
for f in "$STATE"/worker-*.pid; do [[ -f "$f" ]] && pidfiles+=("$f"); done
[[ -f "$STATE/scheduler.pid" ]] && pidfiles+=("$STATE/scheduler.pid")

# wait_group PGID TENTHS: wait up to TENTHS/10 s for the group to end; false if it did not.
wait_group() {
    local _
    for _ in $(seq "$2"); do
        group_alive "$1" || return 0
        sleep 0.1
    done
    ! group_alive "$1"
}

stopped=0
for f in "${pidfiles[@]}"; do
    pid="$(<"$f")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"; then
        # The leader first (a blocking `ray start` or a Dask nanny shuts its children down
        # in order), then the whole group, then SIGKILL.
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_group "$pid" 150; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            if ! wait_group "$pid" 50; then
                echo "$(basename "$f" .pid) (group $pid) did not stop in 20 s; killing it"
                kill -KILL -- "-$pid" 2>/dev/null || true
                wait_group "$pid" 50 || true
            fi
        fi
        stopped=$((stopped + 1))
    fi
    rm -f "$f"
done
rm -f "$STATE/dask_address" "$STATE/ray_address" "$STATE/scheduler.json" "$STATE/env.sh"
if [[ -f "$STATE/ray_temp_dir" ]]; then
    ray_tmp="$(<"$STATE/ray_temp_dir")"
    # Ray's session folders (logs, sockets) of this cluster only.
    [[ -n "$ray_tmp" && -d "$ray_tmp" ]] && rm -rf "${ray_tmp:?}/session_"*
    rm -f "$STATE/ray_temp_dir"
fi
echo "stopped $stopped process group(s); logs kept in $STATE"
