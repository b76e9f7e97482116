"""Fault 5, clock skew across hosts: two worker hosts, one whose clock is ten minutes ahead
and one ten minutes behind (DESCENT_TEST_CLOCK_OFFSET_SECONDS, the test-only knob that
shifts a process's wall clock, ``service.store.models.utcnow``; a time namespace cannot
shift CLOCK_REALTIME), train runs side by side while each one's reaper looks at the
other's live runs every half second with a two-second stale interval. Heartbeats are
written and judged on PostgreSQL's clock, so neither host gets its runs taken back nor
takes back the other's: every run ends once, at its first attempt, with all its history.

Before the fix (heartbeats in the worker's own clock, reapers comparing with theirs), the
host ahead took back every run of the host behind within a second."""

import sys
from datetime import datetime, timezone

import pytest

from tests.integration.test_faults import MEDIUM, assert_clean_logs
from tests.integration.test_service import history, submit, wait_for

pytestmark = pytest.mark.slow

SKEW_SECONDS = 600
CLOCK = "from service.store.models import utcnow; print(utcnow().isoformat())"


def host_clock(cluster, host, offset) -> datetime:
    """What ``utcnow`` says on ``host`` with the knob at ``offset``."""
    env = cluster.env(host, DESCENT_TEST_CLOCK_OFFSET_SECONDS=offset)
    out = host.run([sys.executable, "-c", CLOCK], env=env, cwd=cluster.folder, check=True)
    return datetime.fromisoformat(out.stdout.strip())


def test_hosts_with_skewed_clocks_neither_lose_nor_take_live_runs(cluster):
    ahead, behind = cluster.network.add_host("ahead"), cluster.network.add_host("behind")
    for host, offset in ((ahead, SKEW_SECONDS), (behind, -SKEW_SECONDS)):
        off = (host_clock(cluster, host, offset) - datetime.now(timezone.utc)).total_seconds()
        assert abs(off - offset) < 60, f"the knob did not skew {host.name}'s clock: {off}"
    cluster.start_worker(ahead, DESCENT_TEST_CLOCK_OFFSET_SECONDS=SKEW_SECONDS)
    cluster.start_worker(behind, DESCENT_TEST_CLOCK_OFFSET_SECONDS=-SKEW_SECONDS)

    ids = [submit(cluster.client, MEDIUM) for _ in range(4)]
    runs = wait_for(cluster.client, cluster.fleet, ids, timeout=180)

    trained_on = set()
    for run in runs.values():
        assert run["status"] == "succeeded" and run["attempts"] == 1, run
        trained_on.add(run["worker"].split(":")[0])
        rows = history(cluster.client, run["id"])
        assert [r["epoch"] for r in rows] == list(range(MEDIUM["epochs"] + 1))
        # The run's times are the database's, not the skewed host's.
        started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
        assert abs((started - datetime.now(timezone.utc)).total_seconds()) < SKEW_SECONDS / 2
    assert trained_on == {"ahead", "behind"}, trained_on  # each reaper saw the other's runs
    for worker in cluster.fleet.workers:  # nothing to take back, resend or send: no reap
        assert not [line for line in worker.lines if "reaper:" in line], worker.log()
    assert_clean_logs(cluster.fleet)
