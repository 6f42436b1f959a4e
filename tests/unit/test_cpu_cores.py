"""Handing the draft's cores to the target widens the engine processes above the worker
that were pinned to the target's cores (vllm_seam.cpu_cores.widen_ancestors)."""
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, os
    from vllm_ssd.vllm_seam.cpu_cores import widen_ancestors
    print(json.dumps(widen_ancestors({0}, [0, 1])))
""")
PARENT = textwrap.dedent("""
    import json, os, subprocess, sys
    os.sched_setaffinity(0, {0})
    widened = json.loads(subprocess.run([sys.executable, "-c", sys.argv[1]], check=True,
                                        capture_output=True, text=True).stdout)
    print(json.dumps({"widened": widened, "parent": sorted(os.sched_getaffinity(0))}))
""")


def test_the_processes_pinned_like_the_target_get_the_draft_cores_too():
    assert len(os.sched_getaffinity(0)) >= 2, "the test machine has 2 cores or more"
    out = subprocess.run([sys.executable, "-c", PARENT, CHILD], check=True,
                         capture_output=True, text=True, cwd=os.getcwd()).stdout
    result = json.loads(out)
    assert result["parent"] == [0, 1]
    assert result["widened"] == 1  # the parent only: the test runner is not pinned to {0}
