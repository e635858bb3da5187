"""bench/run.py, the driver of `bench/run.sh` (issue 15): how it reads Google Benchmark's JSON into the table's rows,
how it says that a benchmark is missing, and that --write replaces only the section between its markers. The
benches themselves are not run here (they take minutes and their figures are noise on a shared machine)."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def gb(entries, extra=()):
    """A Google Benchmark JSON document: (run_name, median real_time ns) pairs, with a mean beside each median."""
    benchmarks = []
    for name, ns in entries:
        benchmarks.append({"run_name": name, "aggregate_name": "mean", "real_time": ns * 3, "time_unit": "ns"})
        benchmarks.append({"run_name": name, "aggregate_name": "median", "real_time": ns, "time_unit": "ns"})
    return {"context": {}, "benchmarks": benchmarks + list(extra)}


FULL = [("BM_CacheHit/threads:1/real_time", 25.0), ("BM_CacheHit/threads:2/real_time", 12.5),
        ("BM_MutexMapHit/threads:1/real_time", 20.0), ("BM_MutexMapHit/threads:2/real_time", 100.0),
        ("BM_CacheHotKey/threads:1/real_time", 40.0), ("BM_CacheHotKey/threads:2/real_time", 30.0),
        ("BM_MutexMapHotKey/threads:1/real_time", 20.0), ("BM_MutexMapHotKey/threads:2/real_time", 80.0),
        ("BM_EnvelopeSeal256", 1500.0), ("BM_EnvelopeOpen256", 2000.0), ("BM_RawAesGcmSeal256/threads:1/real_time", 400.0),
        ("BM_RawAesGcmSeal256/threads:2/real_time", 200.0), ("BM_SingleFlightMiss", 390.0)]


def by_name(rows):
    return {r["benchmark"]: r for r in rows}


def test_medians_are_read_per_benchmark_and_thread_count_and_means_are_ignored():
    m = run.parse_gbench(gb(FULL, [{"run_name": "BM_EnvelopeOpen256", "aggregate_name": "median", "real_time": 2.5,
                                    "time_unit": "us"}]))
    assert m[("BM_CacheHit", 2)] == 12.5
    assert m[("BM_CacheHotKey", 1)] == 40.0
    assert m[("BM_EnvelopeSeal256", 1)] == 1500.0
    assert m[("BM_EnvelopeOpen256", 1)] == 2500.0  # microseconds converted, the later entry wins


def test_rows_give_the_ratios_against_their_targets():
    rows = by_name(run.secrets_core_rows(run.parse_gbench(gb(FULL))))
    own = rows["cache hits, own keys: 2 threads / 1 thread"]
    assert own["ratio"] == "**2.00×**" and own["met"] == "**met**"  # 80 M/s on two threads against 40 M/s on one
    assert "mutex map, 2 threads: 10.0 M/s (0.20× its 1 thread)" in own["comparison"]
    hot = rows["cache hits, one key: 2 threads / 1 thread"]
    assert hot["ratio"] == "**1.33×**" and hot["met"] == "not met"
    assert rows["cache hit, own keys, 1 thread"]["met"] == "**met**"  # 25 ns <= 30
    assert rows["cache hit, own keys, 1 thread"]["ratio"] == "1.25× the map's time"
    assert rows["cache hit, one key, 1 thread"]["met"] == "not met"  # 40 ns > 30
    assert rows["envelope seal, 256 bytes"]["ratio"] == "**3.75×**"
    assert rows["envelope seal, 256 bytes"]["met"] == "**met**"
    assert rows["envelope open, 256 bytes"]["ratio"] == "**5.00×**"
    assert rows["envelope open, 256 bytes"]["met"] == "not met"


def test_cluster_rows_compare_postgresql_with_sqlite_and_three_instances_with_one():
    def engine(alone, reader):
        return {"alone_per_s": alone, "with_reader_per_s": reader}

    def get(rps, failed=0):
        return {"requests_per_s": rps, "p99_ms": 3.0, "p50_ms": 1.0, "failed": failed}

    r = {"credentials": 100000, "connections": 32, "get_ratio": 1.5, "get_one": get(10000), "get_three": get(15000, 2),
         "rotation": {"postgresql": engine(12000, 9000), "sqlite": engine(24000, 20000)}}
    rows = by_name(run.cluster_result_rows(r))
    rot = rows["key rotation alone, 100,000 credentials (local keyring, PostgreSQL)"]
    assert rot["figure"] == "12,000 credentials/s" and rot["met"] == "**met**" and rot["ratio"] == "0.50× SQLite's"
    assert "SQLite: 24,000/s" in rot["comparison"] and "with one reader: 9,000/s" in rot["comparison"]
    get3 = rows["HTTP GET /admin/providers/{id} (PostgreSQL): 3 instances / 1"]
    assert get3["ratio"] == "1.50×" and "(2 failed requests)" in get3["figure"]
    assert "1 instance: 10,000 req/s" in get3["comparison"]
    r["rotation"]["postgresql"] = engine(9999, 9000)
    assert run.cluster_result_rows(r)[0]["met"] == "not met"


def test_a_benchmark_missing_from_the_binary_is_a_missing_row_not_a_crash():
    without_hot_key = [e for e in FULL if "HotKey" not in e[0]]
    rows = by_name(run.secrets_core_rows(run.parse_gbench(gb(without_hot_key))))
    hot = rows["cache hits, one key: 2 threads / 1 thread"]
    assert hot["figure"] == "missing: BM_CacheHotKey is not in dyad_bench" and hot["met"] == "—"
    assert rows["cache hit, one key, 1 thread"]["figure"].startswith("missing: BM_CacheHotKey")
    assert rows["cache hits, own keys: 2 threads / 1 thread"]["met"] == "**met**"


def test_a_missing_comparison_is_named_in_its_cell():
    without_map = [e for e in FULL if "MutexMap" not in e[0]]
    rows = by_name(run.secrets_core_rows(run.parse_gbench(gb(without_map))))
    assert "mutex map: missing (BM_MutexMapHit)" in rows["cache hit, own keys, 1 thread"]["comparison"]


def test_the_overhead_ratio_is_the_median_of_the_runs():
    def one(ratio):
        return {"ratio": ratio, "ours": {"p50_us": 1100}, "boto3": {"p50_us": 4000}, "floor": {"p50_us": 1000}}
    r = run.overhead_row("aws", [one(0.15), one(0.05), one(0.09)], "boto3")
    assert r["ratio"].startswith("**0.090**") and "0.150, 0.050, 0.090" in r["ratio"]
    assert r["met"] == "**met**"
    assert run.overhead_row("aws", [one(0.11)], "boto3")["met"] == "not met"
    assert run.overhead_row("aws", [one(-0.2)], "boto3")["met"] == "**met** (ours below the floor: noise)"


def test_cells_with_a_pipe_do_not_break_the_table():
    table = run.render([run.row("a|b", "1")], "header")
    assert "| a\\|b | 1 |" in table


def test_write_replaces_only_the_section_between_the_markers(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    before = "# Benchmarks\n\nMachine.\n\n"
    after = "\n## HTTP server\n\nnarrative | kept\n"
    doc.write_text(f"{before}{run.BEGIN}\nold table\n{run.END}{after}")
    run.write_benchmarks_md("new table\n", doc)
    run.write_benchmarks_md("newer table\n", doc)
    assert doc.read_text() == f"{before}{run.BEGIN}\nnewer table\n{run.END}{after}"


@pytest.mark.parametrize("text", ["# Benchmarks\n\nno markers\n",
                                  f"{run.END}\nswapped\n{run.BEGIN}\n"])
def test_write_refuses_a_file_without_both_markers_in_order_and_leaves_it_alone(tmp_path, text):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(text)
    with pytest.raises(SystemExit, match="markers"):
        run.write_benchmarks_md("table\n", doc)
    assert doc.read_text() == text
