#!/usr/bin/env bash
# Show what cluster/local/start.sh started and whether it still runs. Exit 0 when every
# recorded process is alive, 1 when something is down or nothing was started.
set -euo pipefail
# shellcheck source=cluster/local/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

found=0
down=0
for f in "$STATE"/scheduler.pid "$STATE"/worker-*.pid "$STATE"/ray.pid; do
    [[ -f "$f" ]] || continue
    found=$((found + 1))
    if alive "$f"; then
        echo "$(basename "$f" .pid): running (pid $(<"$f"))"
    else
        echo "$(basename "$f" .pid): DOWN (see $STATE/$(basename "$f" .pid).log)"
        down=$((down + 1))
    fi
done
[[ -f "$STATE/dask_address" ]] && echo "dask: $(<"$STATE/dask_address")"
[[ -f "$STATE/ray_address" ]] && echo "ray:  $(<"$STATE/ray_address")"
if [[ $found -eq 0 ]]; then
    echo "no local cluster started (state in $STATE)"
    exit 1
fi
[[ $down -eq 0 ]]
