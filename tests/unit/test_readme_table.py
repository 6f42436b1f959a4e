"""The README's benchmark table is the one the committed result files generate, and a
result file that names no commit stays out of it."""
import json

from benchmarks import readme_table


def test_readme_table_matches_the_result_files():
    readme = (readme_table.REPO / "README.md").read_text()
    assert readme_table.with_table(readme) == readme, \
        "README.md's benchmark table is stale: run python benchmarks/readme_table.py"


def test_a_result_without_a_commit_is_left_out(tmp_path):
    report = json.loads(readme_table.cpu_reports()[0].read_text())
    assert readme_table.cpu_rows(readme_table.cpu_reports()[0])
    report["provenance"].pop("commit")
    unknown = tmp_path / "offline-unknown.json"
    unknown.write_text(json.dumps(report))
    assert readme_table.cpu_rows(unknown) == []


def test_every_run_on_record_is_in_the_table_once():
    names = [path.name for path in readme_table.cpu_reports()]
    assert "offline-amx-report.json" in names and "offline-amx.json" not in names  # merged
    runs = readme_table.gpu_runs()
    files = [path for run in runs for path in run]
    assert len(files) == len(set(files)) == len(list((readme_table.RESULTS / "gpu").rglob("*.jsonl")))
    folder_run = next(run for run in runs if run[0].parent.name == "one-h100")
    assert [path.name for path in folder_run] == ["bench_qwen7b.jsonl", "bench_qwen7b_more.jsonl"]
