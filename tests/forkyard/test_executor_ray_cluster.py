"""The Ray executor on a two-node cluster whose second node cannot see the driver's files.

The head comes from ``ray.cluster_utils.Cluster``; node2 joins with ``ray start`` inside a
mount namespace where the driver's repository is an empty tmpfs, so its raylet and every
worker it starts cannot read the driver's repository at all.  A task that only node2 can
take (a custom resource) must still run, from the bundle alone, and land.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkyard.journal.events import RunPaths, read_events
from forkyard.run.options import RunOptions
from forkyard.run.workflow import run_workflow
from gitproc.git import Repo
from tests.conftest import require
from tests.forkyard.raytools import ray_home, wait_for
from tests.forkyard.test_run import taskfile
from tests.sandbox.conftest import has_bwrap, has_cgroups

pytestmark = pytest.mark.slow

# Ray advertises one address per node and rewrites 127.0.0.1 to the primary interface's;
# another loopback address is left alone, so all of the cluster's traffic stays local.
RAY_IP = "127.0.0.2"


def _probe(path: str) -> dict[str, Any]:
    import ray

    return {"exists": os.path.exists(path), "node": ray.get_runtime_context().get_node_id(),
            "cache": os.environ.get("FORKYARD_RAY_CACHE_DIR")}


@pytest.fixture
def cluster(webapp: Repo) -> Iterator[dict[str, Any]]:
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    require(has_cgroups(), "writable cgroups")
    require(has_bwrap(), "bubblewrap")
    with ray_home() as base:
        import ray
        from ray.cluster_utils import Cluster

        head = Cluster(initialize_head=False)
        node2: subprocess.Popen[bytes] | None = None
        try:
            head.add_node(num_cpus=1, include_dashboard=False, node_ip_address=RAY_IP,
                          object_store_memory=100 * 2**20, temp_dir=str(base / "ray"),
                          env_vars={"FORKYARD_RAY_CACHE_DIR": str(base / "cache-head")})
            ray_bin = str(Path(sys.executable).with_name("ray"))
            start = (f"mount -t tmpfs -o size=1m none {webapp.path} && exec {ray_bin} start "
                     f"--block --address={head.address} --node-ip-address={RAY_IP} "
                     f"--num-cpus=2 --resources='{json.dumps({'node2': 2})}' "
                     f"--object-store-memory={100 * 2**20} --disable-usage-stats")
            node2 = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", start],
                env={**os.environ, "FORKYARD_RAY_CACHE_DIR": str(base / "cache-node2")},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ray.init(address=head.address, _node_ip_address=RAY_IP, log_to_driver=False)
            assert wait_for(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, 90)
            yield {"base": base}
        finally:
            ray.shutdown()
            if node2 is not None:  # `ray start --block` stops its node on SIGTERM
                node2.send_signal(signal.SIGTERM)
                node2.wait(60)
            head.shutdown()


def test_a_task_forced_onto_node2_runs_without_the_driver_s_repository(
        cluster: dict[str, Any], webapp: Repo) -> None:
    import ray

    probe = ray.remote(_probe)
    there = ray.get(probe.options(resources={"node2": 0.01}).remote(str(webapp.path / ".git")))
    here = ray.get(probe.options(num_cpus=0.01).remote(str(webapp.path / ".git")))
    # node2 cannot see the driver's repository; the head's workers (our filesystem) can.
    assert there["exists"] is False and here["exists"] is True
    assert there["cache"] == str(cluster["base"] / "cache-node2")

    tf = taskfile({"id": "two", "command": "git log --format=%s -1; echo two > two.txt"})
    res = run_workflow(webapp, tf, RunOptions(agents=1, use_history=False, executor="ray",
                                              ray_resources={"node2": 1}))
    assert res.outcome == "succeeded", res.model_dump_json(indent=1)
    two = res.result("two")
    assert two.integrated and webapp.out("show", "main:two.txt") == "two"
    # It ran on node2, from the base's history (the agent saw the base's last commit).
    finished = next(e for e in read_events(RunPaths.of(webapp, res.run_id).events)
                    if e.type == "task_finished" and e.get("task") == "two")
    assert f"Ray node {there['node'][:12]}" in finished.get("message")
    assert two.log_tail.splitlines()[0] == webapp.out("log", "--format=%s", "-1",
                                                      res.target_sha_before)
    # node2's own cache holds the base and the task's work; the head's was never made.
    caches = list((cluster["base"] / "cache-node2" / "repos").glob("*.git"))
    assert len(caches) == 1 and not (cluster["base"] / "cache-head" / "repos").exists()
