"""The benchmark harness in its quick mode: every row runs and the results file is complete.

Times and ratios are never asserted: they belong to the machine, not to the code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS = list("abcdefghi")
MATERIAL_ROWS = ["a", "c", "j", "k", "l", "m", "n", "o"]


def test_quick_benchmark_writes_every_row_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--session-count", "50",
         "--session-requests", "300", "--no-build", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    doc = json.loads(out.read_text())

    assert doc["ok"] is True
    assert doc["errors"] == []
    assert doc["gateway_build"] == "source tree"
    assert [row["id"] for row in doc["main"]] == ROWS
    assert [row["id"] for row in doc["asset"]] == ["a", "b", "e", "g"]
    assert [row["id"] for row in doc["download"]] == ["a", "b", "g"]
    assert [row["id"] for row in doc["material"]] == MATERIAL_ROWS
    assert [row["id"] for row in doc["sessions"]] == ["g", "h", "i", "j"]
    for row in doc["main"] + doc["asset"] + doc["material"]:
        assert row["error_count"] == 0, row
        assert row["requests"] >= 300, row
        assert row["rps"] > 0 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"], row
        assert row["peak_rss_mb"] > 0, row
        # The CPU time the servers under load spent per request (a quick run's few hundred
        # requests may take less than the clock's tick).
        assert row["cpu_us"] is not None and row["cpu_us"] >= 0, row
        assert row["rounds_cpu_us"] == [row["cpu_us"]], row
    for row in doc["download"]:
        assert row["bytes"] == doc["settings"]["download_bytes"]
        assert row["mb_per_s"] > 0
    for row in doc["sessions"]:
        assert row["error_count"] == 0, row
        # Row j's readers open the page twice each.
        assert row["sessions"] == 50 and row["requests"] >= (100 if row["id"] == "j" else 300)
        assert len(row["rss_after_mb"]) == (2 if row["id"] == "i" else 1)
        assert row["group_sets"] == (20 if row["id"] == "j" else 1)
        assert row["rss_growth_mb"] >= 0
    wire = doc["wire"]
    assert wire["nginx_encoding"] == "gzip" and wire["nginx_bytes"] > 0
    assert wire["gateway_bytes"] > 0 and wire["gateway_page_bytes"] > 0
    names = {ratio["name"] for ratio in doc["ratios"]}
    assert {"g/e", "g/d", "g/c", "g/b", "h/g", "download g/b", "download RSS growth (g)",
            "j/k", "k/c", "l/c", "m/j", "gzip bytes j/a", "revisit 304 (j)",
            "CDN: anonymous page (j)", "CDN: public asset (j)", "RSS growth (j)",
            "k/c CPU", "l/c CPU", "j/k CPU"} <= names
    # What a shared cache in front learns: the public page a reader gets rewritten
    # varies on the session, the public asset stays cacheable.
    cdn = wire["cdn"]
    assert cdn["page_ok"] is True and "cookie" in (cdn["page_vary"] or "").lower(), cdn
    assert cdn["asset_ok"] is True and "cookie" not in (cdn["asset_vary"] or "").lower(), cdn
    assert all(ratio["value"] is not None for ratio in doc["ratios"]
               if not ratio["name"].endswith(" CPU"))

    # The printed report names every row and the scorecard.
    for row in ROWS + MATERIAL_ROWS:
        assert f"\n{row} " in done.stdout
    assert "Material for MkDocs page" in done.stdout
    assert "ratios and targets" in done.stdout


def test_only_selects_rows_and_refuses_unknown_names(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--only", "a,zz"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "unknown row or part 'zz'" in bad.stderr

    out = tmp_path / "a.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "a,main",
         "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [row["id"] for row in doc["main"]] == ["a"]
    assert doc["gateway_build"] == "source tree"  # no gateway row: nothing to compile
    assert doc["asset"] == [] and doc["download"] == [] and doc["sessions"] == []
    assert doc["material"] == [] and doc["wire"] is None
    ratio = {r["name"]: r for r in doc["ratios"]}["g/e"]
    assert ratio["value"] is None and ratio["met"] is None


def test_rounds_alternate_their_order_and_ratios_pair_the_rows_of_a_round(
        tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "a,b,main",
         "--rounds", "3", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
        timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = [(line.split()[1], line.split()[3]) for line in done.stderr.splitlines()
                if line.startswith("main ") and " round " in line]
    assert measured == [("a", "1"), ("b", "1"), ("b", "2"), ("a", "2"), ("a", "3"),
                        ("b", "3")]
    doc = json.loads(out.read_text())
    assert [len(row["rounds_rps"]) for row in doc["main"]] == [3, 3]


def test_a_ratio_is_the_median_of_its_rounds_own_ratios() -> None:
    from bench.report import ratios

    def entry(rounds: list[float]) -> dict[str, object]:
        return {"rps": sorted(rounds)[1], "rounds_rps": rounds,
                "cpu_us": sorted(1e6 / r for r in rounds)[1],
                "rounds_cpu_us": [1e6 / r for r in rounds]}

    # Round by round the gateway serves 1.1, 1.2 and 0.5 times what Caddy serves; the
    # medians of each row's rounds alone (1,000 over 1,000) would say 1.0.
    results = {"main": {}, "download": {}, "sessions": {}, "wire": None,
               "material": {"k": entry([1100.0, 600.0, 1000.0]),
                            "c": entry([1000.0, 500.0, 2000.0]),
                            "l": entry([700.0, 800.0])}}
    by_name = {r["name"]: r for r in ratios(results)}
    assert by_name["k/c"]["value"] == 1.1 and by_name["k/c"]["met"] is True
    assert by_name["k/c"]["rounds"] == [1.1, 1.2, 0.5]
    # CPU time per request is paired the same way (Caddy's over the gateway's).
    assert by_name["k/c CPU"]["value"] == 1.1
    # A row that missed a round is compared by its median.
    assert by_name["l/c"]["value"] == 0.8 and by_name["l/c"]["rounds"] == []


def test_the_compiled_build_is_made_once_per_version_of_the_sources(tmp_path: Path) -> None:
    from bench.build import compiled_tree, sources_digest

    repo = tmp_path / "repo"
    (repo / "gateway").mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        (repo / name).write_text(name)
    (repo / "gateway" / "a.py").write_text("x = 1\n")
    first = sources_digest(repo)
    assert sources_digest(repo) == first
    (repo / "gateway" / "a.py").write_text("x = 2\n")
    second = sources_digest(repo)
    assert second != first
    (repo / "gateway" / "a.cpython-311-x86_64-linux-gnu.so").write_bytes(b"built")
    assert sources_digest(repo) == second  # what a build leaves behind does not count
    # A build already made for these sources is reused as it is.
    cache = tmp_path / "cache"
    made = cache / f"build-{second}"
    made.mkdir(parents=True)
    (made / ".built").write_text("ok\n")
    assert compiled_tree(repo, cache) == made


def test_parser_comparison_runs_and_the_rewriter_leaks_on_no_page(tmp_path: Path) -> None:
    out = tmp_path / "parsers.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "parsers.py"), "--no-build", "--pages", "40",
         "--runs", "3", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    doc = json.loads(out.read_text())

    assert doc["build"] == "plain"
    assert doc["page_bytes"] > 20_000  # the Material page P, built for the run
    for name in ("gateway", "lexbor"):
        assert doc["speed_ms"][name]["anonymous"] > 0 and doc["speed_ms"][name]["reader"] > 0
        assert doc["agreement"][name]["pages"] == 55  # the 15 tricky pages and 40 random
    assert doc["agreement"]["gateway"]["leaking"] == 0
    # Lexbor reads <noscript> with scripting off: the tricky page made for it leaks.
    assert doc["agreement"]["lexbor"]["leaking"] >= 1


def test_instruction_counts_are_also_told_without_copies() -> None:
    # Lines as callgrind_annotate 3.19 lists functions by self cost (a gateway's profile;
    # folders shortened).
    libc = " [/usr/lib/x86_64-linux-gnu/libc.so.6]"
    multiarch = "./string/../sysdeps/x86_64/multiarch/"
    listed = "\n".join([
        "-" * 80, "Ir", "-" * 80,
        "589,002,904 (100.0%)  PROGRAM TOTALS", "",
        "-" * 80, "Ir                    file:function", "-" * 80,
        "589,943,290 (100.2%)  /tmp/Python-3.11.7/Include/pycore_call.h:PyObject_Vectorcall'2",
        f" 42,698,061 ( 7.25%)  {multiarch}memmove-vec-unaligned-erms.S:"
        f"__memcpy_avx_unaligned_erms{libc}",
        "  9,139,030 ( 1.55%)  /tmp/Python-3.11.7/Objects/obmalloc.c:_PyObject_Free",
        f"  4,391,624 ( 0.75%)  {multiarch}memset-vec-unaligned-erms.S:"
        f"__memset_avx2_unaligned_erms{libc}",
        f"  2,415,342 ( 0.41%)  {multiarch}memcmp-avx2-movbe.S:__memcmp_avx2_movbe{libc}",
        f"    117,001 ( 0.02%)  ???:memmove@plt{libc}",
        "     53,578 ( 0.01%)  /tmp/Python-3.11.7/Objects/unicodeobject.c:unicode_compare_eq",
    ])
    sys.path.insert(0, str(REPO))
    from bench.instructions import copies

    assert copies(listed) == 42_698_061 + 4_391_624 + 2_415_342 + 117_001
    assert copies("") == 0
