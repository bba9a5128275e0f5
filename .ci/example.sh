#!/usr/bin/env bash
# Runs the example project (examples/sales_demo) with the installed kedro-prefect, in a copy:
# on threads, on a pool of 2 worker processes and on a local Dask cluster of 2 workers, each with
# a fresh PREFECT_HOME
# (so each starts its own ephemeral API), and checks the reports were written. Prints the wall
# time of each run. Used by `tox -e oldest` / `tox -e newest`.
#
# Dask options: `--runner-params=task_runner=dask,n_workers=2` needs Kedro >= 1.6; on older Kedro
# the same options come from the `runner:` section of conf/dask/prefect.yml (`--env dask`).
set -euo pipefail
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$repo/examples/sales_demo" "$work/sales_demo"
cd "$work/sales_demo"
rm -rf logs data/02_intermediate/* data/03_primary/* data/08_reporting/*
mkdir -p conf/dask
printf 'runner:\n  task_runner: dask\n  n_workers: 2\n' > conf/dask/prefect.yml
mkdir -p conf/process
printf 'runner:\n  task_runner: process\n  max_workers: 2\n' > conf/process/prefect.yml

if python -c 'import sys, kedro; sys.exit(tuple(map(int, kedro.__version__.split(".")[:2])) < (1, 6))'
then
    dask_args=(--runner-params=task_runner=dask,n_workers=2)
    process_args=(--runner-params=task_runner=process,max_workers=2)
else
    dask_args=(--env dask)
    process_args=(--env process)
fi
python -c 'import importlib.metadata as m; print("example with", ", ".join(
    f"{p} {m.version(p)}" for p in ("kedro", "prefect", "prefect-dask", "distributed", "fastapi")))'

run() {  # name, kedro run arguments...
    local name=$1; shift
    rm -f data/08_reporting/*.csv
    local start end
    start=$(date +%s%N)
    if ! PREFECT_HOME="$(mktemp -d -p "$work")" kedro run --runner=kedro_prefect.PrefectRunner "$@" \
        > "$work/$name.log" 2>&1; then
        tail -n 60 "$work/$name.log"
        echo "example ($name): kedro run failed"
        return 1
    fi
    end=$(date +%s%N)
    for report in region_report.csv top_products.csv; do
        [[ -s data/08_reporting/$report ]] || { echo "example ($name): no $report"; return 1; }
    done
    local ms=$(( (end - start) / 1000000 ))
    printf 'example (%s): kedro run took %d.%01d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 100))
}

run threads
run process "${process_args[@]}"
if grep -q "Starting temporary server" "$work/process.log"; then
    echo "example (process): a worker process started a temporary Prefect server"
    exit 1
fi
run dask "${dask_args[@]}"
