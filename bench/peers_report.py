"""Ratios seat-agent / scim2-server from the ``scim_load.py --json`` files of bench/peers.sh.

Runs are paired in the order they finished: the first run of one server with the first of the
other, and so on (peers.sh makes them A B A B, so each pair was measured minutes apart on the
same host). For each concurrency level and operation it prints both servers' req/s and p99 and
the ratios: throughput ratio above 1 means seat-agent served more requests per second, p99
ratio below 1 means its slowest 1% were faster.

    python bench/peers_report.py bench/results/peers-sqlite/*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

# Operations in the order scim_load.py measures them.
ORDER = (
    "create",
    "lookup",
    "page",
    "page-last-10%",
    "patch-okta",
    "patch-entra",
    "put",
    "group",
    "delete",
)


def runs_by_label(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each target's runs, oldest first (``finished`` is an ISO UTC time)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in sorted(documents, key=lambda d: d["finished"]):
        out.setdefault(doc["label"], []).append(doc)
    return out


def figures(doc: dict[str, Any]) -> dict[tuple[int, str], dict[str, Any]]:
    """(concurrency, op) -> that operation's summary in one run."""
    return {
        (run["concurrency"], result["op"]): result
        for run in doc["runs"]
        for result in run["results"]
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratio_rows(
    numerator: list[dict[str, Any]], denominator: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (concurrency, op) measured in every run of both targets: the pairs' req/s
    and p99 of each, their ratios numerator/denominator per pair, and the median ratio.
    Pairs are (numerator[i], denominator[i]); a run without a partner is left out."""
    pairs = list(zip(numerator, denominator, strict=False))
    if not pairs:
        return []
    tables = [(figures(a), figures(b)) for a, b in pairs]
    common = set.intersection(*(set(fa) & set(fb) for fa, fb in tables))
    rank = {op: i for i, op in enumerate(ORDER)}
    rows = []
    for level, op in sorted(common, key=lambda k: (k[0], rank.get(k[1], len(ORDER)), k[1])):
        a_runs = [fa[(level, op)] for fa, _ in tables]
        b_runs = [fb[(level, op)] for _, fb in tables]
        rps = [ratio(a["req_per_s"], b["req_per_s"]) for a, b in zip(a_runs, b_runs, strict=True)]
        p99 = [ratio(a["p99_ms"], b["p99_ms"]) for a, b in zip(a_runs, b_runs, strict=True)]
        cpu = [
            ratio(a.get("server_cpu_ms_per_req"), b.get("server_cpu_ms_per_req"))
            for a, b in zip(a_runs, b_runs, strict=True)
        ]
        rows.append(
            {
                "concurrency": level,
                "op": op,
                "a_req_per_s": [a["req_per_s"] for a in a_runs],
                "b_req_per_s": [b["req_per_s"] for b in b_runs],
                "req_per_s_ratio": rps,
                "req_per_s_ratio_median": median(rps),
                "a_p99_ms": [a["p99_ms"] for a in a_runs],
                "b_p99_ms": [b["p99_ms"] for b in b_runs],
                "p99_ratio": p99,
                "p99_ratio_median": median(p99),
                "cpu_ratio": cpu,
                "cpu_ratio_median": median(cpu),
                "errors": sum(a["errors"] for a in a_runs) + sum(b["errors"] for b in b_runs),
            }
        )
    return rows


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def cell(values: list[Any], digits: int = 0) -> str:
    return " / ".join("-" if v is None else f"{v:.{digits}f}" for v in values)


def markdown(rows: list[dict[str, Any]], a: str, b: str) -> str:
    """The rows as a Markdown table; each cell lists the pairs in order, ratios with their
    median after the arrow."""
    head = [
        "conc.",
        "op",
        f"{a} req/s",
        f"{b} req/s",
        "req/s ratio",
        f"{a} p99 ms",
        f"{b} p99 ms",
        "p99 ratio",
        "server CPU/req ratio",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    str(r["concurrency"]),
                    r["op"],
                    cell(r["a_req_per_s"]),
                    cell(r["b_req_per_s"]),
                    f"{cell(r['req_per_s_ratio'], 2)} -> **{fmt(r['req_per_s_ratio_median'])}**",
                    cell(r["a_p99_ms"], 1),
                    cell(r["b_p99_ms"], 1),
                    f"{cell(r['p99_ratio'], 2)} -> **{fmt(r['p99_ratio_median'])}**",
                    f"{cell(r['cpu_ratio'], 2)} -> {fmt(r['cpu_ratio_median'])}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def conditions(runs: dict[str, list[dict[str, Any]]]) -> str:
    """One line per run: when it finished, its host probes and load average, its errors."""
    lines = []
    for doc in sorted((d for ds in runs.values() for d in ds), key=lambda d: d["finished"]):
        probes = ", ".join(
            f"c{run['concurrency']} {run['host_probe_ms_before']:.1f}-"
            f"{run['host_probe_ms_after']:.1f}"
            for run in doc["runs"]
        )
        errors = sum(r["errors"] for run in doc["runs"] for r in run["results"])
        lines.append(
            f"- {doc['label']}, finished {doc['finished']}: {doc['users']} users seeded in "
            f"{doc['seed_seconds']} s; host probe ms {probes}; load average "
            f"{' '.join(doc['load_average_before'])} before; {errors} errors"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="scim_load.py --json files")
    p.add_argument("--numerator", default="seat-agent", help="label on top of each ratio")
    p.add_argument("--denominator", default="scim2-server", help="label below")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    args = p.parse_args(argv)
    try:
        docs = [json.loads(f.read_text()) for f in args.files]
    except (OSError, ValueError) as exc:
        print(f"cannot read the runs: {exc}", file=sys.stderr)
        return 2
    runs = runs_by_label(docs)
    missing = [x for x in (args.numerator, args.denominator) if x not in runs]
    if missing:
        print(
            f"no run of {', '.join(missing)} in these files (found: {', '.join(runs)})",
            file=sys.stderr,
        )
        return 2
    rows = ratio_rows(runs[args.numerator], runs[args.denominator])
    print(conditions(runs))
    print()
    print(markdown(rows, args.numerator, args.denominator))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
