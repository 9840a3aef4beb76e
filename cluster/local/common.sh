# shellcheck shell=bash
# Shared settings of the local-cluster scripts (sourced by start.sh, stop.sh, status.sh).
# Everything a local cluster writes stays inside the repository's ignored .cache/,
# with the same cache variables as the Makefile.

# REPO, VENV and STATE are used by the scripts that source this file.
# shellcheck disable=SC2034
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck disable=SC2034
VENV="${PORELAB_VENV:-$REPO/.venv}"
# State of this local cluster: PID files, logs, addresses, the Ray token.
# shellcheck disable=SC2034
STATE="${PORELAB_CLUSTER_DIR:-$REPO/.cache/cluster-local}"

export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$REPO/.cache/xdg}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$REPO/.cache/matplotlib}"
export PORELAB_CACHE="${PORELAB_CACHE:-$REPO/.cache}"
export DASK_TEMPORARY_DIRECTORY="${DASK_TEMPORARY_DIRECTORY:-$REPO/.cache/dask}"
export RAY_USAGE_STATS_ENABLED=0

die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 2
}

# alive PIDFILE: true when the process named in PIDFILE is running.
alive() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(<"$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}
