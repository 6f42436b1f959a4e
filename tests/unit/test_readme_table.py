"""The README's benchmark table is the one the committed result files generate, and a
result file that names no commit stays out of it."""
import json

from benchmarks import readme_table


def test_readme_table_matches_the_result_files():
    readme = (readme_table.REPO / "README.md").read_text()
    assert readme_table.with_table(readme) == readme, \
        "README.md's benchmark table is stale: run python benchmarks/readme_table.py"


def test_a_result_without_a_commit_is_left_out(tmp_path):
    report = json.loads(readme_table.CPU_REPORTS[0].read_text())
    assert readme_table.cpu_rows(readme_table.CPU_REPORTS[0])
    report["provenance"].pop("commit")
    unknown = tmp_path / "offline-unknown.json"
    unknown.write_text(json.dumps(report))
    assert readme_table.cpu_rows(unknown) == []
