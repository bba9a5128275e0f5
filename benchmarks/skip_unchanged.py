"""What ``skip_unchanged`` costs and saves; writes ``benchmarks/results/skip_unchanged.json``.

    python benchmarks/skip_unchanged.py              # 3 repeats per timing (median)
    python benchmarks/skip_unchanged.py --repeats 5 --size-gb 1

1. ``kedro run`` of examples/sales_demo with the ephemeral API, whole process (wall) and the
   pipeline part Kedro reports ("Pipeline execution completed successfully in X sec"):
   SequentialRunner; PrefectRunner; PrefectRunner with ``skip_unchanged=true`` on a fresh cache
   (first run: every node runs and its in-memory outputs are persisted); and the same again,
   nothing changed (second run: every node is skipped).
2. The same runs in one Python process (``--in-process``): ``KedroSession`` runs of the example
   after a warm-up run, so the Prefect API is up and nothing is imported again; this isolates
   what skipping saves and costs from process and API start-up.
3. Fingerprinting a file input of ``--size-gb`` GB: the first time (the content is hashed),
   and again with the file untouched (size, modification time and inode match the memo).
4. The fingerprint step in an unchanged re-run (``--fingerprint``): in one process, after a
   first run, unchanged ``skip_unchanged`` runs of the example and of a generated project of
   ``--modules`` modules (one node per module, each calling helpers in its own module, in the
   next module and in a shared one): the time of every node's fingerprint (code, parameters,
   data) summed over the run, against the whole ``session.run``; and the code part alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "examples" / "sales_demo"
sys.path.insert(0, str(HERE))
from run import base_env, kedro_run_output  # noqa: E402  (the benchmarks' one kedro-run helper)

PIPELINE_SECONDS = re.compile(r"completed\s+successfully\s+in\s+([0-9.]+)\s+sec")


def env_for(home: Path) -> dict[str, str]:
    return {**base_env(home), "COLUMNS": "400"}  # Kedro's timing line on one line


def kedro_run(project: Path, env: dict[str, str], *args: str) -> tuple[float, float | None]:
    """Wall seconds of ``kedro run`` and the pipeline seconds Kedro logs."""
    wall, output = kedro_run_output(project, env, *args)
    found = PIPELINE_SECONDS.search(output)
    return wall, float(found.group(1)) if found else None


def bench_example(tmp: Path, repeats: int) -> dict[str, Any]:
    home = tmp / "prefect-home"
    env = env_for(home)
    project = tmp / "sales_demo"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    prefect = "--runner=kedro_prefect.PrefectRunner"
    skip = "--runner-params=skip_unchanged=true"
    cache = home / "storage" / "kedro-prefect"
    kedro_run(project, env)  # warm-up: bytecode caches, the Prefect database
    kedro_run(project, env, prefect)
    samples: dict[str, list[tuple[float, float | None]]] = {
        "SequentialRunner": [],
        "PrefectRunner": [],
        "skip_unchanged, first run": [],
        "skip_unchanged, second run (unchanged)": [],
    }
    for _ in range(repeats):
        samples["SequentialRunner"].append(kedro_run(project, env))
        samples["PrefectRunner"].append(kedro_run(project, env, prefect))
        shutil.rmtree(cache, ignore_errors=True)
        samples["skip_unchanged, first run"].append(kedro_run(project, env, prefect, skip))
        samples["skip_unchanged, second run (unchanged)"].append(
            kedro_run(project, env, prefect, skip)
        )
    return {
        name: {
            "wall": statistics.median(w for w, _ in runs),
            "pipeline": _median([p for _, p in runs if p is not None]),
            "samples": runs,
        }
        for name, runs in samples.items()
    }


def bench_in_process(tmp: Path, repeats: int) -> dict[str, Any]:
    """Seconds of ``session.run`` in one process: SequentialRunner, PrefectRunner, and with
    ``skip_unchanged`` a first run (fresh cache) and a second, unchanged one."""
    project = tmp / "sales_demo_in_process"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    code = f"""
import json, shutil, statistics, sys, time, os, logging
os.chdir({str(project)!r})
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import SequentialRunner
from kedro_prefect import PrefectRunner
from kedro_prefect.cache.storage import default_cache_path
bootstrap_project({str(project)!r})
logging.disable(logging.WARNING)

def run(runner):
    with KedroSession.create(project_path={str(project)!r}) as session:
        start = time.perf_counter()
        session.run(runner=runner)
        return time.perf_counter() - start

run(PrefectRunner())  # warm-up: the API, imports
run(PrefectRunner(skip_unchanged=True))
samples = {{"SequentialRunner": [], "PrefectRunner": [], "first": [], "second": []}}
for _ in range({repeats}):
    samples["SequentialRunner"].append(run(SequentialRunner()))
    samples["PrefectRunner"].append(run(PrefectRunner()))
    shutil.rmtree(default_cache_path(), ignore_errors=True)
    samples["first"].append(run(PrefectRunner(skip_unchanged=True)))
    samples["second"].append(run(PrefectRunner(skip_unchanged=True)))
print("RESULT" + json.dumps(samples))
"""
    env = env_for(tmp / "prefect-home-in-process")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    found = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    if result.returncode or not found:
        raise RuntimeError(f"in-process benchmark failed:\n{result.stderr[-4000:]}")
    samples = json.loads(found[0][len("RESULT") :])
    names = {
        "SequentialRunner": "SequentialRunner",
        "PrefectRunner": "PrefectRunner",
        "first": "skip_unchanged, first run",
        "second": "skip_unchanged, second run (unchanged)",
    }
    return {
        names[key]: {"seconds": statistics.median(values), "samples": values}
        for key, values in samples.items()
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def bench_file(tmp: Path, repeats: int, size_gb: float) -> dict[str, Any]:
    import fsspec

    from kedro_prefect.cache.fingerprint import file_fingerprint

    class Memo(dict):
        def get(self, path: str, stat: str) -> str | None:  # type: ignore[override]
            known = super().get(path)
            return known[1] if known and known[0] == stat else None

        def put(self, path: str, stat: str, content_hash: str) -> None:
            self[path] = (stat, content_hash)

    path = tmp / "big.bin"
    block = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as stream:
        for _ in range(int(size_gb * 1024 / 8)):
            stream.write(block)
    filesystem = fsspec.filesystem("file")
    cold, warm = [], []
    for _ in range(repeats):
        memo = Memo()
        start = time.perf_counter()
        first = file_fingerprint(filesystem, str(path), memo)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        again = file_fingerprint(filesystem, str(path), memo)
        warm.append(time.perf_counter() - start)
        assert first == again
    path.unlink()
    return {
        "size_bytes": int(size_gb * 1024**3),
        "content hash (first time)": statistics.median(cold),
        "unchanged file (memo)": statistics.median(warm),
        "samples": {"cold": cold, "warm": warm},
    }


def write_generated_project(root: Path, modules: int) -> Path:
    """A Kedro project ``gen_demo`` of ``modules`` modules of ~60 lines, one node in each."""
    package = root / "src" / "gen_demo"
    package.mkdir(parents=True)
    (root / "conf" / "base").mkdir(parents=True)
    (root / "conf" / "local").mkdir(parents=True)
    (root / "conf" / "base" / "parameters.yml").write_text("start: 1\n")
    (root / "conf" / "base" / "catalog.yml").write_text("{}\n")
    (root / "pyproject.toml").write_text(
        '[tool.kedro]\npackage_name = "gen_demo"\nproject_name = "gen"\n'
        'kedro_init_version = "1.0.0"\nsource_dir = "src"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("")
    (package / "common.py").write_text(
        "SCALE = 2\n\n\ndef shared(x):\n    return _clip(x) * SCALE\n\n\n"
        "def _clip(x):\n    return max(0, min(x, 1000))\n"
    )
    for i in range(modules):
        nxt = (i + 1) % modules
        fillers = "".join(
            f"\n\ndef unused_{k}(rows):\n    total = 0\n    for row in rows:\n"
            f"        total += row * {k}\n    return total\n"
            for k in range(8)
        )
        (package / f"mod_{i}.py").write_text(
            f"from gen_demo import common, mod_{nxt}\n\nOFFSET = {i}\n\n\n"
            f"def node_{i}(x):\n    return _step(x) + mod_{nxt}.helper_{nxt}(x)\n\n\n"
            f"def _step(x):\n    return common.shared(x) + OFFSET\n\n\n"
            f"def helper_{i}(y):\n    return y + OFFSET\n" + fillers
        )
    imports = "".join(f"from gen_demo import mod_{i}\n" for i in range(modules))
    nodes = "".join(
        f'        node(mod_{i}.node_{i}, "params:start", "out_{i}", name="node_{i}"),\n'
        for i in range(modules)
    )
    (package / "pipeline_registry.py").write_text(
        f"from kedro.pipeline import Pipeline, node\n{imports}\n\n"
        f"def register_pipelines():\n    return {{'__default__': Pipeline([\n{nodes}    ])}}\n"
    )
    return root


def bench_fingerprint(tmp: Path, repeats: int, modules: int) -> dict[str, Any]:
    """Share of the fingerprint step in unchanged re-runs (in one process per project)."""
    example = tmp / "sales_demo_fp"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    generated = write_generated_project(tmp / "gen_demo", modules)
    out = {}
    for name, project in (("example", example), (f"generated, {modules} modules", generated)):
        out[name] = _fingerprint_share(tmp, project, repeats)
    return out


def _fingerprint_share(tmp: Path, project: Path, repeats: int) -> dict[str, Any]:
    code = f"""
import json, logging, os, time
os.chdir({str(project)!r})
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_prefect import PrefectRunner
from kedro_prefect.cache import skip
from kedro_prefect.cache.code import CodeFingerprints
bootstrap_project({str(project)!r})
logging.disable(logging.WARNING)
spent = []
original = skip.SkipUnchanged.fingerprint

def timed(self, node):
    start = time.perf_counter()
    try:
        return original(self, node)
    finally:
        spent.append(time.perf_counter() - start)

skip.SkipUnchanged.fingerprint = timed

def run():
    spent.clear()
    with KedroSession.create(project_path={str(project)!r}) as session:
        start = time.perf_counter()
        session.run(runner=PrefectRunner(skip_unchanged=True))
        return time.perf_counter() - start, sum(spent), len(spent)

run()  # first run: every node runs; the API starts
rows = [run() for _ in range({repeats})]
from kedro.framework.project import PACKAGE_NAME, pipelines
nodes = pipelines["__default__"].nodes
code_only = []
for _ in range({repeats}):
    start = time.perf_counter()
    fingerprints = CodeFingerprints(PACKAGE_NAME)
    for node in nodes:
        fingerprints.node(node)
    code_only.append(time.perf_counter() - start)
print("RESULT" + json.dumps({{"rows": rows, "code_only": code_only, "nodes": len(nodes)}}))
"""
    env = env_for(tmp / f"prefect-home-{project.name}")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    found = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    if result.returncode or not found:
        raise RuntimeError(f"fingerprint benchmark failed:\n{result.stderr[-4000:]}")
    data = json.loads(found[0][len("RESULT") :])
    rows = data["rows"]
    return {
        "nodes": data["nodes"],
        "unchanged re-run (session.run)": statistics.median(r[0] for r in rows),
        "fingerprint step": statistics.median(r[1] for r in rows),
        "share": statistics.median(r[1] / r[0] for r in rows),
        "code part alone": statistics.median(data["code_only"]),
        "samples": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--skip-example", action="store_true")
    parser.add_argument("--in-process", action="store_true", help="only the in-process runs")
    parser.add_argument("--fingerprint", action="store_true", help="only the fingerprint step")
    parser.add_argument("--modules", type=int, default=50, help="modules of the generated project")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kp-skip-bench-") as tmp:
        if args.fingerprint:
            out["fingerprint"] = bench_fingerprint(Path(tmp), args.repeats, args.modules)
        elif args.in_process:
            out["in_process"] = bench_in_process(Path(tmp), args.repeats)
        else:
            if not args.skip_example:
                out["example"] = bench_example(Path(tmp), args.repeats)
            out["file"] = bench_file(Path(tmp), args.repeats, args.size_gb)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    name = "skip_unchanged_in_process" if args.in_process else "skip_unchanged"
    if args.fingerprint:
        name = "skip_unchanged_fingerprint"
    (results / f"{name}.json").write_text(json.dumps(out, indent=2))
    for key, row in out.get("fingerprint", {}).items():
        print(
            f"{key:28s} {row['nodes']:3d} nodes: unchanged re-run "
            f"{row['unchanged re-run (session.run)']:6.2f} s, fingerprint step "
            f"{row['fingerprint step'] * 1000:7.1f} ms ({row['share']:.1%}), code part "
            f"{row['code part alone'] * 1000:6.1f} ms"
        )
    for key, row in out.get("in_process", {}).items():
        print(f"{key:42s} session.run {row['seconds']:6.2f} s")
    for name, row in out.get("example", {}).items():
        pipeline = f"{row['pipeline']:6.2f} s" if row["pipeline"] is not None else "?"
        print(f"{name:42s} wall {row['wall']:6.2f} s   pipeline {pipeline}")
    file = out.get("file")
    if file:
        print(
            f"{file['size_bytes'] / 1024**3:.1f} GB file: content hash "
            f"{file['content hash (first time)']:.2f} s, unchanged "
            f"{file['unchanged file (memo)'] * 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
