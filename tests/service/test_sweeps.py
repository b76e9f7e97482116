"""/api/v1/sweeps through the Flask test client and the sweep store functions, on SQLite and
PostgreSQL, with no worker: validation, preview, exactly-once cells, concurrency slots,
states, leaderboard, cancel and the successive-halving rule."""

import pytest
from sqlalchemy import func, select

from service import sweepspace
from service.store import Run
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.models import Sweep, SweepCell

from .conftest import API, error_of, queued_run_ids

BASE = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20, "batch_mode": "full"}
GRID = {"base": BASE, "grid": {"learning_rate": [0.01, 0.1, 1.0],
                               "layers": [[2, 4, 1], [2, 8, 1]]}}
RANDOM = {"base": BASE, "trials": 6, "seed": 3,
          "random": {"learning_rate": {"loguniform": [1e-3, 1]},
                     "batch_size": {"choice": [1, 2, 4]},
                     "epochs": {"int": [5, 30]},
                     "init": {"choice": ["uniform", "xavier"]},
                     "validation_split": {"uniform": [0.0, 0.5]}}}


def post(client, body, status=202):
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def count(sessions, model):
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def finish(sessions, run_id, status="succeeded", final_error=0.1):
    """What a worker does for a sweep's run: claim it, then end it in one transaction that
    also dispatches the sweep's next cells. Returns the run ids to enqueue."""
    to_send = []
    with sessions() as session:
        run = store_runs.claim_run(session, run_id, "test-worker")
        assert run is not None
        sweep_id = run.sweep_id
    with sessions() as session:
        store_runs.complete_run(
            session, run_id, run.attempts, [], {"epochs_done": 20, "final_error": final_error,
                                                "best_error": final_error, "best_epoch": 20},
            status, before_commit=lambda s: to_send.extend(store_sweeps.run_ended(s, sweep_id)))
    return to_send


# --------------------------------------------------------------------- preview and 422


def test_grid_preview_lists_every_combination_and_stores_nothing(client, sessions, queue_dir):
    body = post(client, {**GRID, "preview": True}, 200)
    assert body["count"] == 6
    configs = [c["config"] for c in body["configurations"]]
    assert configs[0] == {"learning_rate": 0.01, "layers": [2, 4, 1]}
    assert configs[-1] == {"learning_rate": 1.0, "layers": [2, 8, 1]}
    assert configs[1] == {"learning_rate": 0.1, "layers": [2, 4, 1]}  # fields in name order
    spec = body["configurations"][3]["spec"]
    assert spec["layers"] == [2, 8, 1] and spec["epochs"] == 20 and spec["loss"] == "mse"
    assert client.post(f"{API}/sweeps/preview", json=GRID).get_json() == body
    assert count(sessions, Sweep) == 0 and count(sessions, Run) == 0
    assert queued_run_ids(queue_dir) == []


def test_random_draws_are_seeded_and_in_range(client):
    first = post(client, {**RANDOM, "preview": True}, 200)["configurations"]
    again = post(client, {**RANDOM, "preview": True}, 200)["configurations"]
    other = post(client, {**RANDOM, "seed": 4, "preview": True}, 200)["configurations"]
    assert first == again and first != other and len(first) == 6
    for c in first:
        config = c["config"]
        assert 1e-3 <= config["learning_rate"] <= 1
        assert config["batch_size"] in (1, 2, 4)
        assert 5 <= config["epochs"] <= 30 and isinstance(config["epochs"], int)
        assert config["init"] in ("uniform", "xavier")


@pytest.mark.parametrize("body, field", [
    ({**GRID, "grid": {"learning_rate": [0.1, 1.0, -1.0]}}, "grid.learning_rate[2]"),
    ({**GRID, "grid": {"layers": [[2, 4, 1], [3, 4, 1]]}}, "grid.layers[1]"),
    ({**GRID, "grid": {"learning_rate": []}}, "grid.learning_rate"),
    ({**GRID, "grid": {"colour": [1, 2]}}, "grid.colour"),
    ({**GRID, "base": {**BASE, "loss": "hinge"}}, "base.loss"),
    ({**GRID, "base": {**BASE, "dataset": "nope"}}, "base.dataset"),
    ({"base": BASE}, "grid"),
    ({**GRID, "random": RANDOM["random"], "trials": 3}, "grid"),
    ({**RANDOM, "random": {"learning_rate": {"loguniform": [0, 1]}}}, "random.learning_rate"),
    ({**RANDOM, "random": {"learning_rate": {"normal": [0, 1]}}}, "random.learning_rate"),
    ({**RANDOM, "random": {"epochs": {"int": [-5, -1]}}}, "random.epochs"),
    ({key: value for key, value in RANDOM.items() if key != "trials"}, "trials"),
    ({**GRID, "max_concurrency": 0}, "max_concurrency"),
    ({**GRID, "early_stopping": {"min_epochs": 0}}, "early_stopping.min_epochs"),
    ({**GRID, "metric": "accuracy"}, "metric"),
    ({**GRID, "metric": "val_error"}, "metric"),  # no validation split to measure it on
])
def test_a_bad_base_or_space_is_a_422_naming_the_field_and_stores_nothing(
        client, sessions, queue_dir, body, field):
    error = error_of(client.post(f"{API}/sweeps", json=body), 422)
    assert field in error["fields"], error
    assert count(sessions, Sweep) == 0 and count(sessions, Run) == 0
    assert queued_run_ids(queue_dir) == []


# ----------------------------------------------------------------- cells and slots


def test_a_sweep_stores_one_run_per_cell_and_queues_all_without_a_limit(client, queue_dir):
    sweep = post(client, GRID)
    assert sweep["status"] == "queued" and sweep["total"] == 6 and sweep["kind"] == "grid"
    assert sweep["counts"] == {"queued": 6}
    ids = [run["id"] for run in sweep["runs"]]
    assert sorted(queued_run_ids(queue_dir)) == sorted(ids)
    assert all(run["sweep_id"] == sweep["id"] and run["dispatched"] for run in sweep["runs"])
    assert sweep["runs"][5]["spec"]["learning_rate"] == 1.0
    assert sweep["runs"][5]["config"] == {"learning_rate": 1.0, "layers": [2, 8, 1]}


def test_cells_are_created_exactly_once(client, sessions):
    sweep = post(client, {**GRID, "max_concurrency": 1})
    with sessions() as session:
        cell = session.scalars(select(SweepCell).where(SweepCell.sweep_id == sweep["id"])
                               .order_by(SweepCell.position)).first()
        again = store_sweeps.create_cell(session, sweep["id"], cell.position, cell.config,
                                         cell.config_hash, dict(BASE, learning_rate=0.01),
                                         session.get(Run, cell.run_id).dataset_id)
        session.commit()
        assert again is None
        assert sweepspace.config_hash(cell.config) == cell.config_hash
    assert count(sessions, SweepCell) == 6 and count(sessions, Run) == 6
    # The database itself refuses a second cell with the same key.
    from sqlalchemy.exc import IntegrityError

    with sessions() as session:
        run = store_runs.create_run(session, {**BASE, "learning_rate": 0.5, "batch_size": 1,
                                              "seed": 0}, cell_dataset(session), sweep_id=1)
        session.add(SweepCell(sweep_id=sweep["id"], position=99, config={}, dispatched=False,
                              config_hash=cell.config_hash, run_id=run.id))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def test_bulk_cell_creation_stores_only_new_configurations(client, sessions):
    """create_cells (what POST /sweeps uses) skips configurations the sweep already has,
    and a retry of the whole batch stores nothing."""
    sweep = post(client, {**GRID, "max_concurrency": 1})
    with sessions() as session:
        stored = session.scalars(select(SweepCell).where(SweepCell.sweep_id == sweep["id"])
                                 .order_by(SweepCell.position)).all()
        dataset_id = cell_dataset(session)
        spec = session.get(Run, stored[0].run_id).spec  # complete, as validation leaves it
        batch = [{"position": c.position, "config": c.config, "config_hash": c.config_hash,
                  "spec": spec, "dataset_id": dataset_id} for c in stored]
        new = {"position": 6, "config": {"learning_rate": 7.0},
               "spec": dict(spec, learning_rate=7.0),
               "config_hash": sweepspace.config_hash({"learning_rate": 7.0}),
               "dataset_id": dataset_id, "name": "extra"}
        assert store_sweeps.create_cells(session, sweep["id"], batch) == []
        ids = store_sweeps.create_cells(session, sweep["id"], batch + [new])
        session.commit()
        assert len(ids) == 1 and session.get(Run, ids[0]).name == "extra"
        assert session.get(Run, ids[0]).owner == session.get(Run, stored[0].run_id).owner
        assert store_sweeps.create_cells(session, sweep["id"], batch + [new]) == []
    assert count(sessions, SweepCell) == 7 and count(sessions, Run) == 7


def test_a_sweep_without_a_concurrency_limit_stores_every_cell_dispatched(client, sessions,
                                                                          queue_dir):
    """Its cells are dispatched in the transaction that stores them (no fill_slots pass),
    every run is enqueued once, and create_cells returns the run ids in the cells' order."""
    sweep = post(client, GRID)
    ids = [run["id"] for run in sweep["runs"]]
    assert sorted(queued_run_ids(queue_dir)) == sorted(ids) and len(ids) == 6
    with sessions() as session:
        stored = session.scalars(select(SweepCell).where(SweepCell.sweep_id == sweep["id"])
                                 .order_by(SweepCell.position)).all()
        assert all(cell.dispatched for cell in stored)
        assert [cell.run_id for cell in stored] == ids
        assert all(session.get(Run, run_id).enqueued_at is not None for run_id in ids)


def test_bulk_cells_that_collide_fall_back_to_one_at_a_time_still_dispatched(client,
                                                                            sessions):
    """Two cells of one batch with the same configuration break the bulk INSERT's unique
    key: create_cells then stores them one at a time (the first only) and, asked to,
    marks what it stored dispatched."""
    sweep = post(client, {**GRID, "max_concurrency": 1})
    with sessions() as session:
        first = session.scalars(select(SweepCell).where(SweepCell.sweep_id == sweep["id"])
                                .order_by(SweepCell.position)).first()
        spec = session.get(Run, first.run_id).spec
        config = {"learning_rate": 9.0}
        cell = {"position": 7, "config": config, "config_hash": sweepspace.config_hash(config),
                "spec": dict(spec, learning_rate=9.0), "dataset_id": cell_dataset(session)}
        ids = store_sweeps.create_cells(session, sweep["id"], [cell, {**cell, "position": 8}],
                                        dispatched=True)
        session.commit()
        assert len(ids) == 1
        stored = session.scalar(select(SweepCell).where(SweepCell.run_id == ids[0]))
        assert stored.position == 7 and stored.dispatched


def cell_dataset(session):
    return session.scalars(select(Run.dataset_id)).first()


def test_max_concurrency_dispatches_the_next_cell_as_runs_end(client, sessions, queue_dir):
    sweep = post(client, {**GRID, "max_concurrency": 2})
    ids = [run["id"] for run in sweep["runs"]]
    assert sorted(queued_run_ids(queue_dir)) == ids[:2]
    assert [run["dispatched"] for run in sweep["runs"]] == [True] * 2 + [False] * 4
    # Filling again while both slots are taken dispatches nothing.
    with sessions() as session:
        assert store_sweeps.fill_slots(session, sweep["id"]) == []
        session.commit()
    assert finish(sessions, ids[0]) == [ids[2]]
    got = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert got["status"] == "running"
    assert got["counts"] == {"succeeded": 1, "queued": 5}
    # A redelivered end (or any second fill) dispatches nothing more.
    with sessions() as session:
        assert store_sweeps.run_ended(session, sweep["id"]) == []
        session.commit()
    errors = {ids[1]: 0.3, ids[2]: 0.05, ids[3]: 0.2, ids[4]: 0.4, ids[5]: None}
    for run_id in ids[1:]:
        finish(sessions, run_id, "diverged" if errors[run_id] is None else "succeeded",
               errors[run_id])
    got = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert got["status"] == "succeeded" and got["counts"] == {"succeeded": 5, "diverged": 1}
    board = got["leaderboard"]
    assert [entry["run_id"] for entry in board] == [ids[2], ids[0], ids[3], ids[1], ids[4]]
    assert board[0]["config"] == {"learning_rate": 1.0, "layers": [2, 4, 1]}
    assert got["best"] == board[0]
    desc = client.get(f"{API}/sweeps/{sweep['id']}?metric=final_error&order=desc").get_json()
    assert desc["leaderboard"][0]["run_id"] == ids[4]
    with sessions() as session:
        assert session.get(Sweep, sweep["id"]).status == "succeeded"
    listed = client.get(f"{API}/sweeps").get_json()["sweeps"]
    assert [s["id"] for s in listed] == [sweep["id"]] and listed[0]["total"] == 6


def test_cancel_ends_queued_runs_and_dispatches_nothing_more(client, sessions, queue_dir):
    sweep = post(client, {**GRID, "max_concurrency": 2})
    ids = [run["id"] for run in sweep["runs"]]
    with sessions() as session:
        store_runs.claim_run(session, ids[0], "test-worker")
    response = client.post(f"{API}/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202
    got = response.get_json()
    assert got["counts"] == {"running": 1, "cancelled": 5} and got["status"] == "running"
    with sessions() as session:
        assert session.get(Run, ids[0]).cancel_requested
    # The running run stops at its next chunk, as a cancelled run; nothing is dispatched.
    assert finish_running(sessions, ids[0], "cancelled") == []
    got = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert got["status"] == "cancelled" and got["counts"] == {"cancelled": 6}
    assert sorted(queued_run_ids(queue_dir)) == ids[:2]


def finish_running(sessions, run_id, status):
    to_send = []
    with sessions() as session:
        run = session.get(Run, run_id)
        store_runs.complete_run(session, run_id, run.attempts, [], {"epochs_done": 3},
                                status, before_commit=lambda s: to_send.extend(
                                    store_sweeps.run_ended(s, run.sweep_id)))
    return to_send


def test_unknown_sweeps_are_404(client):
    error_of(client.get(f"{API}/sweeps/12345"), 404)
    error_of(client.post(f"{API}/sweeps/12345/cancel"), 404)
    error_of(client.get(f"{API}/sweeps/1?metric=colour"), 422)


def test_sweeps_are_in_the_openapi_document(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    for path in ("/api/v1/sweeps", "/api/v1/sweeps/preview", "/api/v1/sweeps/{sweep_id}",
                 "/api/v1/sweeps/{sweep_id}/cancel"):
        assert path in paths


def test_a_down_broker_keeps_no_sweep(make_client, sessions):
    client = make_client(broker_url="redis://127.0.0.1:1/0")
    error_of(client.post(f"{API}/sweeps", json=GRID), 503)
    assert count(sessions, Sweep) == 0 and count(sessions, Run) == 0


# -------------------------------------------------------------- successive halving


def test_rungs_are_min_epochs_times_powers_of_the_reduction_factor():
    assert store_sweeps.rungs({"min_epochs": 10, "reduction_factor": 3}, 100) == [10, 30, 90]
    assert store_sweeps.rungs({"min_epochs": 10, "reduction_factor": 2}, 10) == []


def test_a_run_continues_only_in_the_top_fraction_of_its_rung(client, sessions):
    sweep = post(client, {**GRID, "early_stopping": {"min_epochs": 5, "reduction_factor": 3}})
    ids = [run["id"] for run in sweep["runs"]]
    arrivals = [(ids[0], 0.5, True),    # the first arrival always continues
                (ids[1], 0.6, False),   # 2 recorded, keep ceil(2/3)=1: 0.5 is better
                (ids[2], 0.1, True),    # the best so far
                (ids[3], 0.55, False),  # 4 recorded, keep 2: 0.1 and 0.5 are better
                (ids[4], None, False),  # non-finite never continues
                (ids[5], 0.05, True)]   # 6 recorded, keep 2: none is better
    with sessions() as session:
        got = []
        for run_id, value, _ in arrivals:
            got.append(store_sweeps.record_rung(session, sweep["id"], 5, run_id, value, 3))
            session.commit()
        # A redelivered run gets its recorded decision again.
        assert store_sweeps.record_rung(session, sweep["id"], 5, ids[1], 0.0, 3) is False
    assert got == [a[2] for a in arrivals]


def test_sweep_list_pages_by_cursor_and_stays_stable_as_sweeps_arrive(client):
    small = {"base": BASE, "grid": {"learning_rate": [0.1]}}
    ids = [post(client, small)["id"] for _ in range(5)]
    first = client.get(f"{API}/sweeps?limit=2").get_json()
    assert [s["id"] for s in first["sweeps"]] == ids[::-1][:2]
    newer = post(client, small)["id"]  # arrives between pages: not on later pages
    seen = [s["id"] for s in first["sweeps"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(f"{API}/sweeps", query_string={"limit": 2, "cursor": cursor})
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        seen += [s["id"] for s in body["sweeps"]]
        cursor = body["next_cursor"]
    assert seen == ids[::-1] and newer not in seen
    last = client.get(f"{API}/sweeps?limit=10").get_json()
    assert last["next_cursor"] is None and len(last["sweeps"]) == 6


@pytest.mark.parametrize("cursor", ["garbage", "W2ZhbHNlLCBudWxsLCAieCJd", "W2ZhbHNlLCBudWxsLCAtMV0"])
def test_a_bad_sweep_cursor_is_a_422_naming_cursor(client, cursor):
    response = client.get(f"{API}/sweeps", query_string={"cursor": cursor})
    assert "cursor" in error_of(response, 422)["fields"]
