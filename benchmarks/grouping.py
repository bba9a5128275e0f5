"""``group_by``: whole-process ``kedro run`` of a wide namespaced pipeline, grouped and not.

A generated Kedro project whose pipeline is ``NAMESPACES`` namespaces of ``LENGTH`` chained
no-op nodes (1,000 nodes by default, all data in memory). Each round runs, one after the other
(rounds interleave the cases, so load on a shared machine hits them alike):

* ``kedro run`` with SequentialRunner;
* PrefectRunner with ``group_by=none`` (one task run per node), ``namespace`` (one per
  namespace) and ``memory`` (one per in-memory chain), each a first run: the lingering
  ephemeral API is stopped before, so Prefect's start-up is included;
* PrefectRunner ``group_by=namespace`` back-to-back (reusing the lingering API).

Wall time from launch to process exit, medians; the load average is printed with them.

    python benchmarks/grouping.py --repeats 3            # markdown rows on stdout
    python benchmarks/grouping.py --dask-only            # bytes moved between Dask workers

On Dask (``--dask``, ``--dask-only``): a local cluster of 2 worker processes (1 thread each),
started by this script; ``kedro run`` with ``task_runner=dask,address=...`` of 8 namespaces, each
a source node feeding two chains of 5 nodes passing 1 MB in memory (each node sleeps 0.2 s, so
that Dask spreads them over the workers), joined by a last node (whose output is tiny),
``group_by=none`` vs ``namespace``: bytes the workers sent (to each other and to the driver),
summed over the workers before and after each run. Dask counts them by its size of each result
moved, which is the data inside a node task's Prefect state (kedro-prefect registers that
``dask.sizeof`` on its workers), and the number of those transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_felt import BIN, stop_lingering_api, timed

PACKAGE = "grouping_demo"
PROJECT_FILES = {
    "pyproject.toml": f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{PACKAGE}"
        version = "0.1.0"

        [tool.kedro]
        package_name = "{PACKAGE}"
        project_name = "grouping-demo"
        kedro_init_version = "1.0.0"
        source_dir = "src"
        """,
    "conf/base/catalog.yml": "{}\n",
    "conf/local/.keep": "",
    f"src/{PACKAGE}/__init__.py": "",
    f"src/{PACKAGE}/settings.py": "",
    f"src/{PACKAGE}/pipeline_registry.py": """
        import os
        import time

        from kedro.pipeline import Pipeline, node


        def noop(x=None):
            return 1


        def payload(x=None):
            time.sleep(float(os.environ.get("BENCH_SLEEP", "0")))
            return bytes(int(os.environ.get("BENCH_PAYLOAD", "0")))


        def join(*parts):
            return 1


        def register_pipelines():
            namespaces = int(os.environ.get("BENCH_NAMESPACES", "100"))
            length = int(os.environ.get("BENCH_LENGTH", "10"))
            if os.environ.get("BENCH_PAYLOAD"):  # two in-memory chains from a source, joined
                chain = [node(payload, None, "d0", name="n0")]
                for b in ("a", "b"):
                    chain += [
                        node(payload, f"{b}{i - 1}" if i else "d0", f"{b}{i}", name=f"{b}{i}")
                        for i in range(length)
                    ]
                chain += [node(join, [f"a{length - 1}", f"b{length - 1}"], "out", name="join")]
            else:
                chain = [node(noop, None, "d0", name="n0")]
                chain += [node(noop, f"d{i - 1}", f"d{i}", name=f"n{i}") for i in range(1, length)]
            total = Pipeline([])
            for k in range(namespaces):
                total += Pipeline(chain, namespace=f"ns{k}")
            return {"__default__": total}
        """,
}

MARKER = "Pipeline execution completed"
CASES = {
    "SequentialRunner": [],
    "group_by=none": ["--runner=kedro_prefect.PrefectRunner", "--runner-params=group_by=none"],
    "group_by=namespace": [
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=group_by=namespace",
    ],
    "group_by=memory": ["--runner=kedro_prefect.PrefectRunner", "--runner-params=group_by=memory"],
    "group_by=namespace, back-to-back": [
        "--runner=kedro_prefect.PrefectRunner",
        "--runner-params=group_by=namespace",
    ],
}


def write_project(root: Path) -> Path:
    for name, text in PROJECT_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def project_and_env(
    tmp: Path, namespaces: int, length: int, **bench: str
) -> tuple[Path, dict[str, str]]:
    """The generated project in ``tmp`` and the environment of its ``kedro run``s (a
    PREFECT_HOME of their own, no PREFECT_API_URL: the local API)."""
    project = write_project(tmp / PACKAGE)
    home = tmp / "home"
    home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PYTHONPATH": str(project / "src"),
        "BENCH_NAMESPACES": str(namespaces),
        "BENCH_LENGTH": str(length),
        **bench,
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    return project, env


def measure(repeats: int, namespaces: int, length: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kp-grouping-") as tmp:
        project, env = project_and_env(Path(tmp), namespaces, length)
        env.pop("KEDRO_PREFECT_API_IDLE_SECONDS", None)
        kedro = [str(BIN / "kedro"), "run"]
        warm = {**env, "BENCH_NAMESPACES": "1", "BENCH_LENGTH": "1"}
        timed(kedro, project, warm)  # bytecode caches, the database's migrations
        timed([*kedro, *CASES["group_by=namespace"]], project, warm)
        samples: dict[str, list[float]] = {case: [] for case in CASES}
        for round_ in range(repeats):
            for case, args in CASES.items():
                if args and "back-to-back" not in case:
                    stop_lingering_api(env, project)
                samples[case].append(timed([*kedro, *args], project, env)["wall"])
            print(f"round {round_ + 1}: done", file=sys.stderr, flush=True)
        stop_lingering_api(env, project)
    return {
        "nodes": namespaces * length,
        "namespaces": namespaces,
        "length": length,
        "repeats": repeats,
        "medians": {case: statistics.median(values) for case, values in samples.items()},
        "samples": samples,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _set_worker_env(values: dict[str, str]) -> None:
    """The payload size and sleep for the nodes, in a worker's environment: the nodes run
    there, not in the ``kedro run`` process whose environment has them."""
    os.environ.update(values)


def _worker_bytes_sent(dask_worker: Any) -> int:
    return int(getattr(dask_worker, "transfer_outgoing_bytes_total", 0))


def _worker_transfers(dask_worker: Any) -> int:
    return int(getattr(dask_worker, "transfer_outgoing_count_total", 0))


def measure_dask(
    repeats: int, namespaces: int = 8, length: int = 5, payload: int = 1_000_000
) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    cases = ("none", "namespace")
    with (
        tempfile.TemporaryDirectory(prefix="kp-grouping-dask-") as tmp,
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        project, env = project_and_env(
            Path(tmp), namespaces, length, BENCH_PAYLOAD=str(payload), BENCH_SLEEP="0.2"
        )
        client.run(_set_worker_env, {k: env[k] for k in ("BENCH_PAYLOAD", "BENCH_SLEEP")})
        samples: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
        for _ in range(repeats):
            for case in cases:
                before = sum(client.run(_worker_bytes_sent).values())
                transfers = sum(client.run(_worker_transfers).values())
                command = [
                    str(BIN / "kedro"),
                    "run",
                    "--runner=kedro_prefect.PrefectRunner",
                    f"--runner-params=task_runner=dask,address={cluster.scheduler_address},"
                    f"group_by={case}",
                ]
                wall = timed(command, project, env)["wall"]
                sent = sum(client.run(_worker_bytes_sent).values()) - before
                transfers = sum(client.run(_worker_transfers).values()) - transfers
                samples[case].append({"wall": wall, "bytes": sent, "transfers": transfers})
        stop_lingering_api(env, project)
    return {
        "namespaces": namespaces,
        "length": length,
        "payload": payload,
        "repeats": repeats,
        "medians": {
            case: {k: statistics.median(s[k] for s in runs) for k in ("wall", "bytes", "transfers")}
            for case, runs in samples.items()
        },
        "samples": samples,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def report_dask(data: dict[str, Any]) -> list[str]:
    lines = [
        f"On Dask: {data['namespaces']} namespaces, each a source node feeding two chains of "
        f"{data['length']} nodes passing {data['payload'] / 1e6:g} MB in memory (each sleeps "
        "0.2 s), joined by a last node; a local cluster of 2 worker processes; bytes "
        f"the workers sent (to each other and to the driver) during the run, median of "
        f"{data['repeats']}; load average at the end {data['load_average']}.\n",
        "| group_by | bytes sent by workers | transfers | wall |",
        "| --- | ---: | ---: | ---: |",
    ]
    for case, median in data["medians"].items():
        lines.append(
            f"| {case} | {median['bytes'] / 1e6:.1f} MB | {median['transfers']:.0f} "
            f"| {median['wall']:.2f} s |"
        )
    return lines


def report(data: dict[str, Any]) -> list[str]:
    base = data["medians"]["SequentialRunner"]
    lines = [
        f"{data['nodes']} nodes ({data['namespaces']} namespaces x {data['length']} chained "
        f"no-op nodes), whole `kedro run` wall, median of {data['repeats']}; load average at "
        f"the end {data['load_average']}.\n",
        "| case | wall | vs SequentialRunner |",
        "| --- | ---: | ---: |",
    ]
    for case, wall in data["medians"].items():
        lines.append(f"| {case} | {wall:.2f} s | {wall - base:+.2f} s |")
    return lines


#: The heading of this benchmark's section in docs/benchmarks.md.
HEADING = "## Grouping nodes (`group_by`)"
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


DASK_NOTE = (
    "*Bytes sent* is Dask's own count: the size of each result moved, which for a node task is "
    "the data inside its Prefect state (kedro-prefect tells Dask how to size it); *transfers* "
    "counts the ``get_data`` requests the workers served (to other workers and to the driver)."
)


def section(data: dict[str, Any]) -> str:
    dask = " --dask" if "dask" in data else ""
    command = (
        f"python benchmarks/grouping.py --repeats {data['repeats']}{dask} --write-doc"
        if (data["namespaces"], data["length"]) == (100, 10)
        else f"python benchmarks/grouping.py --repeats {data['repeats']}{dask} "
        f"--namespaces {data['namespaces']} --length {data['length']} --write-doc"
    )
    return "\n".join(
        [
            f"{HEADING}\n",
            "Whole-process `kedro run` of a generated project, launch to exit, with Prefect's "
            "start-up (first runs: the lingering ephemeral API is stopped before each). On a "
            "shared, loaded machine absolute seconds are inflated (and noisy): compare the rows "
            "of one run. See [grouping](grouping.md).\n",
            *(report(data) if "medians" in data else []),
            "",
            *((*report_dask(data["dask"]), "", DASK_NOTE, "") if "dask" in data else ()),
            f"```bash\n{command}\n```\n",
        ]
    )


def splice(text: str, new: str) -> str:
    """``text`` (docs/benchmarks.md) with this section replaced, or put before "At a glance"."""
    start = text.find(HEADING)
    if start == -1:
        at = text.find("## At a glance")
        at = len(text) if at == -1 else at
        return text[:at] + new + "\n" + text[at:]
    end = text.find("\n## ", start + len(HEADING))
    return text[:start] + new + (text[end + 1 :] if end != -1 else "")


def splice_dask(text: str, dask: dict[str, Any]) -> str:
    """``text`` (docs/benchmarks.md) with the Dask rows of this section replaced."""
    start = text.index("On Dask: ", text.index(HEADING))
    end = text.index("```bash", start)
    return text[:start] + "\n".join([*report_dask(dask), "", DASK_NOTE, "", ""]) + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--write-doc", action="store_true", help="put the rows into docs/benchmarks.md"
    )
    parser.add_argument("--from-json", type=Path, help="report these results, measure nothing")
    parser.add_argument("--dask", action="store_true", help="also measure bytes moved on Dask")
    parser.add_argument("--dask-only", action="store_true", help="only the Dask measurement")
    args = parser.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    elif args.dask_only:
        data = {"repeats": args.repeats, "namespaces": 100, "length": 10}
    else:
        data = measure(args.repeats, args.namespaces, args.length)
    if args.dask or args.dask_only:
        data["dask"] = measure_dask(args.repeats)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    if "medians" in data:
        print("\n".join(report(data)))
    if "dask" in data:
        print("\n".join(report_dask(data["dask"])))
    if args.write_doc and "medians" not in data:  # --dask-only: replace the Dask rows only
        DOC.write_text(splice_dask(DOC.read_text(), data["dask"]))
    elif args.write_doc:
        DOC.write_text(splice(DOC.read_text(), section(data)))


if __name__ == "__main__":
    main()
