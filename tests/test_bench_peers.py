"""The peer comparison's tools (bench/peers.sh): scim_load.py --url against stock scim2-server,
and the ratio report over its --json files. Tiny numbers: this checks the figures are made and
paired right, not how fast anything is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers_report  # noqa: E402
import scim_load  # noqa: E402


def run_doc(label: str, finished: str, figures: dict[tuple[int, str], tuple[float, float]]):
    """A scim_load --json document: (concurrency, op) -> (req/s, p99 ms)."""
    levels = sorted({level for level, _ in figures})
    return {
        "label": label,
        "finished": finished,
        "users": 1000,
        "seed_seconds": 2.0,
        "load_average_before": ["1.0", "1.0", "1.0"],
        "runs": [
            {
                "concurrency": level,
                "host_probe_ms_before": 8.0,
                "host_probe_ms_after": 8.5,
                "results": [
                    {
                        "op": op,
                        "requests": 100,
                        "errors": 0,
                        "req_per_s": rps,
                        "p50_ms": p99 / 2,
                        "p95_ms": p99 / 1.5,
                        "p99_ms": p99,
                        "server_cpu_ms_per_req": None,
                    }
                    for (lv, op), (rps, p99) in figures.items()
                    if lv == level
                ],
            }
            for level in levels
        ],
    }


def test_ratios_pair_runs_in_the_order_they_finished():
    docs = [
        # Given out of order: the report sorts by finish time, so A1 pairs with B1.
        run_doc(
            "seat-agent",
            "2026-12-03T08:04:00Z",
            {(1, "put"): (300, 6.0), (1, "create"): (200, 10.0)},
        ),
        run_doc(
            "scim2-server",
            "2026-12-03T08:01:00Z",
            {(1, "put"): (100, 3.0), (1, "create"): (400, 5.0)},
        ),
        run_doc(
            "scim2-server",
            "2026-12-03T08:07:00Z",
            {(1, "put"): (150, 2.0), (1, "create"): (100, 20.0)},
        ),
        run_doc(
            "seat-agent",
            "2026-12-03T08:10:00Z",
            {(1, "put"): (600, 1.0), (1, "create"): (100, 10.0), (4, "put"): (1, 1)},
        ),
    ]
    runs = peers_report.runs_by_label(docs)
    rows = peers_report.ratio_rows(runs["seat-agent"], runs["scim2-server"])

    # Measured order (create before put); (4, put) is in one run only, so left out.
    assert [(r["concurrency"], r["op"]) for r in rows] == [(1, "create"), (1, "put")]
    create, put = rows
    assert create["req_per_s_ratio"] == [0.5, 1.0]
    assert create["p99_ratio"] == [2.0, 0.5]
    assert put["a_req_per_s"] == [300, 600]
    assert put["b_req_per_s"] == [100, 150]
    assert put["req_per_s_ratio"] == [3.0, 4.0]
    assert put["req_per_s_ratio_median"] == 3.5
    assert put["p99_ratio"] == [2.0, 0.5]
    assert put["cpu_ratio_median"] is None
    table = peers_report.markdown(rows, "seat-agent", "scim2-server")
    assert "| 1 | put | 300 / 600 | 100 / 150 | 3.00 / 4.00 -> **3.50** |" in table


def test_report_names_a_missing_server(tmp_path, capsys):
    only = tmp_path / "1-seat-agent.json"
    only.write_text(json.dumps(run_doc("seat-agent", "2026-12-03T08:00:00Z", {(1, "put"): (1, 1)})))

    assert peers_report.main([str(only)]) == 2
    assert "no run of scim2-server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ops", "measured"),
    [
        (
            "create,lookup,page,patch,put,delete",
            [
                "create",
                "lookup",
                "page",
                "page-last-10%",
                "patch-okta",
                "patch-entra",
                "put",
                "delete",
            ],
        ),
        ("delete", ["delete"]),
        ("group-read", ["group-get", "group-lookup", "group-page"]),
    ],
)
def test_load_run_against_scim2_server(scim2_server, tmp_path, capsys, ops, measured):
    from scim2_peer import running_peer

    out = tmp_path / "run.json"
    with running_peer(scim2_server) as peer:
        code = scim_load.main(
            [
                "--url", peer.direct_url, "--token", peer.token, "--label", "scim2-server",
                "--server-pid", str(scim2_server.process.pid),
                "--users", "200", "--requests", "6", "--page-requests", "2",
                "--concurrency", "1,2", "--ops", ops, "--json", str(out),
                "--groups", "3", "--group-size", "5",
            ]
        )  # fmt: skip
        left = len(peer.users())

    assert code == 0, capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["label"] == "scim2-server"
    assert doc["users"] == 200
    assert [run["concurrency"] for run in doc["runs"]] == [1, 2]
    for run in doc["runs"]:
        assert [r["op"] for r in run["results"]] == measured
        for r in run["results"]:
            assert r["errors"] == 0
            assert r["requests"] == {"page": 2, "page-last-10%": 1}.get(r["op"], 6)
            assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
            assert r["server_cpu_ms_per_req"] is not None
    # Every user created while measuring was deleted again: the seeded 200 are left.
    assert left == 200
    printed = capsys.readouterr().out
    assert "seeded over HTTP" in printed
    if ops == "delete":
        assert "DELETE removes users created for it just before" in printed
