"""Where a run trained (workers.environment): what a worker process records with each run,
read once per process, and written by the claim that trains the run."""

import subprocess
import sys

import llvmlite
import numba
import numpy as np
import pytest
import scipy
from sqlalchemy import update

from service.store import Dataset, Run
from service.store import runs as store_runs
from service.store.arrays import content_hash, to_npz
from workers import environment, execute
from workers.execute import execute_run

from .conftest import store_run

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Example CPU @ 2.00GHz
flags\t\t: fpu sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: Example CPU @ 2.00GHz
flags\t\t: fpu sse2 avx avx2 fma bmi2 avx512f
"""


def test_the_process_environment_names_versions_blas_and_cpu():
    env = environment.process_environment()
    assert env["numpy"] == np.__version__ and env["numba"] == numba.__version__
    assert env["scipy"] == scipy.__version__ and env["llvmlite"] == llvmlite.__version__
    assert env["descent"]["version"]
    blas = env["blas"]
    assert blas is not None, "kernels load SciPy's BLAS (kernels/_engine.py ensure_blas)"
    assert blas["internal_api"] and blas["version"] and blas["num_threads"] >= 1
    assert "architecture" in blas
    assert set(env["cpu"]) == {"model", "machine", "flags"}
    assert environment.process_environment() is env  # read once per process


def test_the_blas_threads_are_those_the_kernels_run_with():
    """Read after the worker's thread limit (workers.celery_app.limit_threads), in a fresh
    process: the BLAS numba's np.dot calls (SciPy's), with the limit's thread count."""
    script = """
import os
from threadpoolctl import threadpool_info, threadpool_limits
import kernels
threadpool_limits(1)
from workers.environment import process_environment
blas = process_environment()["blas"]
scipy_libs = [os.path.basename(i["filepath"]) for i in threadpool_info()
              if i["user_api"] == "blas" and os.path.basename(os.path.dirname(i["filepath"]))
              in ("scipy.libs", "scipy")]
print(blas["num_threads"], blas["library"], *scipy_libs)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, library, *scipy_libs = done.stdout.split()
    assert threads == "1"
    # SciPy's own (its wheel's scipy.libs) when it brings one, not NumPy's of a like name.
    assert library in scipy_libs or not scipy_libs


def test_cpu_model_and_flags_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    cpu = environment.cpu_info(path)
    assert cpu["model"] == "Example CPU @ 2.00GHz"
    # The first processor's flags (the first that ends up running the kernels is unknown;
    # hosts with mixed flags are rare and not assumed).
    assert cpu["flags"] == {"avx": True, "avx2": True, "fma": True, "avx512f": False}
    missing = environment.cpu_info(tmp_path / "none")
    assert missing["flags"] is None


SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def test_git_commit_of_a_checkout_without_running_git(tmp_path):
    assert environment.git_commit(tmp_path) is None  # not a checkout
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert environment.git_commit(tmp_path) == SHA
    (git / "refs" / "heads" / "main").unlink()  # packed by git gc
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{OTHER} refs/heads/main\n")
    assert environment.git_commit(tmp_path) == OTHER
    (git / "HEAD").write_text(SHA + "\n")  # detached
    assert environment.git_commit(tmp_path) == SHA


def test_git_commit_of_a_worktree(tmp_path):
    main = tmp_path / "main" / ".git"
    (main / "refs" / "heads").mkdir(parents=True)
    (main / "refs" / "heads" / "topic").write_text(OTHER + "\n")
    private = main / "worktrees" / "wt"
    private.mkdir(parents=True)
    (private / "HEAD").write_text("ref: refs/heads/topic\n")
    (private / "commondir").write_text("../..\n")
    checkout = tmp_path / "wt"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {private}\n")
    assert environment.git_commit(checkout) == OTHER


def test_this_checkout_reports_its_commit():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=environment.CHECKOUT,
                          capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else None  # not a checkout
    assert environment.process_environment()["descent"]["commit"] == expected


def test_a_trained_run_records_where_it_trained(sessions):
    run_id = store_run(sessions, epochs=3, dtype="float32")
    assert execute_run(sessions, run_id) == "succeeded"
    with sessions() as session:
        run = session.get(Run, run_id)
        env, dataset = run.environment, run.dataset
        process = environment.process_environment()
        assert env == {**process, "dtype": "float32", "threads": 1,
                       "blas": {**process["blas"], "num_threads": 1},
                       "dataset": {"id": dataset.id, "name": "xor",
                                   "content_hash": dataset.content_hash}}


@pytest.mark.parametrize("wanted,default,cap,used", [(2, 1, 4, 2), (3, 1, 2, 2),
                                                    (None, 2, None, 2)])
def test_a_run_trains_with_its_threads_within_the_cap_and_records_them(sessions, wanted,
                                                                         default, cap, used):
    """The spec's threads, capped by the worker's DESCENT_MAX_THREADS (a spec stored
    before it had threads trains with the worker's default), applied to the BLAS numba's
    kernels call during training only, and recorded as the run's environment."""
    from threadpoolctl import threadpool_info

    from workers.execute import Threads

    run_id = store_run(sessions, epochs=3, threads=wanted or 1)
    if wanted is None:  # stored before specs had threads
        with sessions() as session:
            spec = dict(session.get(Run, run_id).spec)
            del spec["threads"]
            session.execute(update(Run).where(Run.id == run_id).values(spec=spec))
            session.commit()
    seen = []
    real_train = execute.kernels.train

    def spy(*args, **kw):
        seen.append({i["filepath"]: i["num_threads"] for i in threadpool_info()
                     if i["user_api"] == "blas"})
        return real_train(*args, **kw)

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info()
              if i["user_api"] == "blas"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execute.kernels, "train", spy)
        assert execute_run(sessions, run_id, threads=Threads(default, cap)) == "succeeded"
    assert seen and set(seen[0].values()) == {used}
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info()
             if i["user_api"] == "blas"}
    assert after == before  # the process's own limit is back
    with sessions() as session:
        env = session.get(Run, run_id).environment
        assert env["threads"] == used and env["blas"]["num_threads"] == used


@pytest.mark.parametrize("validation_split,blas_used", [(0.0, 1), (0.2, 2)])
def test_a_split_run_records_the_one_blas_thread_it_trains_with(sessions, validation_split,
                                                                 blas_used):
    """threads=2 on full batches of digits through 64-16-10: 1797 rows make parts of 899
    rows x 1184 weights, over knobs.PARALLEL_MIN (2**20), so each part trains on one BLAS
    thread; with a validation split of 0.2, 1438 training rows make parts under it, and
    BLAS gets both threads. The environment records what training used, not the spec."""
    from threadpoolctl import threadpool_info

    run_id = store_run(sessions, dataset="digits", layers=[64, 16, 10], epochs=2,
                       batch_mode="full", loss="cross_entropy", threads=2,
                       validation_split=validation_split)
    seen = []
    real_train = execute.kernels.train

    def spy(*args, **kw):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return real_train(*args, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execute.kernels, "train", spy)
        assert execute_run(sessions, run_id) == "succeeded"
    assert seen == [{blas_used}]
    with sessions() as session:
        env = session.get(Run, run_id).environment
        assert env["threads"] == 2 and env["blas"]["num_threads"] == blas_used


def test_a_claim_records_its_environment_and_a_new_claim_replaces_it(sessions):
    run_id = store_run(sessions, epochs=3)
    with sessions() as session:
        store_runs.claim_run(session, run_id, "w1", environment={"mark": 1})
        assert session.get(Run, run_id, populate_existing=True).environment == {"mark": 1}
        # Claimed again (its worker was lost): the new claim's environment, or none.
        session.execute(update(Run).where(Run.id == run_id).values(status="queued"))
        session.commit()
        store_runs.claim_run(session, run_id, "w2")
        assert session.get(Run, run_id, populate_existing=True).environment is None
        session.execute(update(Run).where(Run.id == run_id).values(status="queued"))
        session.commit()
        store_runs.claim_run(session, run_id, "w3", environment={"mark": 3})
        assert session.get(Run, run_id, populate_existing=True).environment == {"mark": 3}


def test_a_claim_that_skips_the_exhausted_check_still_never_claims_past_the_cap(sessions):
    run_id = store_run(sessions, epochs=3)
    with sessions() as session:
        session.execute(update(Run).where(Run.id == run_id).values(attempts=3))
        session.commit()
        # A caller that read the run with fewer claims (another claim came in between):
        # no claim, and the run is left for the path that fails it.
        assert store_runs.claim_run(session, run_id, "w1", states=("queued",),
                                    max_attempts=3, exhausted=False) is None
        run = session.get(Run, run_id, populate_existing=True)
        assert (run.status, run.attempts) == ("queued", 3)
        assert store_runs.claim_run(session, run_id, "w1", states=("queued",),
                                    max_attempts=3) is None
        assert session.get(Run, run_id, populate_existing=True).status == "failed"


def test_data_that_does_not_match_its_hash_fails_the_run(sessions):
    """The hash a run records is the hash of the arrays it trained on: data changed behind
    the store's back is refused, not trained on under the old hash."""
    run_id = store_run(sessions, epochs=3)
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([1, 0, 0, 1])
    with sessions() as session:
        dataset_id = session.get(Run, run_id).dataset_id
        session.execute(update(Dataset).where(Dataset.id == dataset_id)
                        .values(data=to_npz(X=X, y=y)))
        session.commit()
    assert execute_run(sessions, run_id) == "failed"
    with sessions() as session:
        run = session.get(Run, run_id)
        assert "content hash" in run.error_message
        # With its hash set right, the same data trains.
        run.dataset.content_hash = content_hash(X, y)
        session.commit()
    run_id = store_run(sessions, epochs=3)
    assert execute_run(sessions, run_id) == "succeeded"
