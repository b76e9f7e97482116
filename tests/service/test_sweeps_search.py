"""Model-based sweeps (search tpe / cmaes) through the Flask test client and the store's slot
filling, with no worker: validation, the first asks, one new cell per freed slot, what each
run state tells the sampler, reproducibility of a seeded sweep, cancel, and the cost of a
rebuilt study."""

import time

import optuna
import pytest
from sqlalchemy import func, select

from service.store import Run
from service.store import search
from service.store import sweeps as store_sweeps
from service.store.models import Sweep, SweepCell

from .conftest import API, error_of, queued_run_ids
from .test_sweeps import finish

BASE = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20, "batch_mode": "full"}
SPACE = {"learning_rate": {"loguniform": [1e-3, 1.0]},
         "layers": {"choice": [[2, 4, 1], [2, 8, 1], [2, 4, 4, 1]]},
         "epochs": {"int": [5, 30]}}
TPE = {"base": BASE, "search": "tpe", "space": SPACE, "trials": 8, "seed": 5,
       "max_concurrency": 2}


def post(client, body, status=202):
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def cells_of(sessions, sweep_id):
    with sessions() as session:
        return [(c.position, c.config, c.dispatched, r.status) for c, r in
                store_sweeps.cells(session, sweep_id)]


@pytest.mark.parametrize("change, field", [
    ({"search": "bayes"}, "search"),
    ({"trials": 0}, "trials"),
    ({"trials": 1001}, "trials"),
    ({"trials": None}, "trials"),
    ({"space": None}, "space"),
    ({"space": {}}, "space"),
    ({"space": {"learning_rate": {"choice": [0.1]}, "epochs": {"int": [5, 5]}}}, "space"),
    ({"space": {"learning_rate": {"normal": [0, 1]}}}, "space.learning_rate"),
    ({"space": {"nonsense": {"uniform": [0, 1]}}}, "space.nonsense"),
    ({"space": {"dataset": {"choice": ["xor", "iris"]}}}, "space.dataset"),
    ({"space": {"learning_rate": {"uniform": [-1.0, 1.0]}}}, "space.learning_rate"),
    ({"space": {"layers": {"choice": [[2, 4, 1], [3, 4, 1]]}}}, "space.layers"),
    ({"grid": {"learning_rate": [0.1]}}, "grid"),
    ({"objective": "median"}, "objective"),
    ({"metric": "val_error"}, "metric"),
    ({"max_concurrency": 65}, "max_concurrency"),
    ({"seed": 2**32}, "seed"),
    ({"seed": -1}, "seed"),
    ({"space": {"seed": {"choice": list(range(1001))}}}, "space"),
])
def test_a_bad_model_based_sweep_is_a_422_naming_the_field(client, sessions, change, field):
    body = {**TPE, **change}
    body = {k: v for k, v in body.items() if v is not None}
    error = error_of(client.post(f"{API}/sweeps", json=body), 422)
    assert field in error["fields"], error
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Sweep)) == 0


def test_space_is_only_for_model_based_search(client):
    body = {"base": BASE, "random": SPACE, "trials": 3, "space": SPACE}
    assert "space" in error_of(client.post(f"{API}/sweeps", json=body), 422)["fields"]
    body = {"base": BASE, "search": "random", "grid": {"learning_rate": [0.1]}}
    assert "search" in error_of(client.post(f"{API}/sweeps", json=body), 422)["fields"]


def test_a_tpe_sweep_asks_its_first_runs_and_one_more_per_freed_slot(client, sessions,
                                                                        queue_dir):
    sweep = post(client, TPE)
    assert sweep["kind"] == "tpe" and sweep["space"] == SPACE and sweep["trials"] == 8
    assert sweep["objective"] == "final" and sweep["max_concurrency"] == 2
    assert sweep["total"] == 2 and sorted(queued_run_ids(queue_dir)) == \
        sorted(r["id"] for r in sweep["runs"])
    for run in sweep["runs"]:
        config = run["config"]
        assert set(config) == set(SPACE)
        assert 1e-3 <= config["learning_rate"] <= 1.0
        assert config["layers"] in SPACE["layers"]["choice"]
        assert run["spec"]["layers"] == config["layers"] and run["dispatched"]
    ids = [r["id"] for r in sweep["runs"]]
    sent = finish(sessions, ids[0], final_error=0.3)
    assert len(sent) == 1  # one slot freed, one run asked
    assert len(cells_of(sessions, sweep["id"])) == 3
    # Finishing every run in turn spends the budget exactly.
    pending = [ids[1], *sent]
    while pending:
        pending.extend(finish(sessions, pending.pop(0), final_error=0.2))
    done = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert done["total"] == 8 and done["status"] == "succeeded"
    assert [r["config"] for r in done["runs"]] == [c for _, c, _, _ in
                                                   cells_of(sessions, sweep["id"])]
    assert len(done["leaderboard"]) == 8


def test_a_seeded_sweep_with_one_slot_asks_the_same_runs_in_the_same_order(client, sessions):
    def run_sweep(seed):
        sweep = post(client, {**TPE, "seed": seed, "max_concurrency": 1, "trials": 12})
        pending = [sweep["runs"][0]["id"]]
        while pending:
            run_id = pending.pop()
            with sessions() as session:
                config = session.get(Run, run_id).spec
            # A deterministic result of the configuration: what TPE learns from.
            error = abs(config["learning_rate"] - 0.1) + 0.01 * len(config["layers"])
            pending.extend(finish(sessions, run_id, final_error=error))
        return [c for _, c, _, _ in cells_of(sessions, sweep["id"])]

    first, again, other = run_sweep(5), run_sweep(5), run_sweep(6)
    assert len(first) == 12 and first == again and first != other


def test_each_run_state_tells_the_sampler_what_it_means(client, sessions):
    sweep = post(client, {**TPE, "max_concurrency": 3, "early_stopping": {"min_epochs": 2}})
    ids = [r["id"] for r in sweep["runs"]]
    finish(sessions, ids[0], final_error=0.25)
    finish(sessions, ids[1], status="diverged", final_error=None)
    finish(sessions, ids[2], status="stopped_early", final_error=0.5)
    with sessions() as session:
        study = search.study_of(session, session.get(Sweep, sweep["id"]))
    states = [t.state for t in study.trials]
    State = optuna.trial.TrialState
    assert states[:3] == [State.COMPLETE, State.FAIL, State.PRUNED]
    assert study.trials[0].value == 0.25
    assert list(study.trials[2].intermediate_values.values()) == [0.5]
    # The runs the freed slots asked for are in flight: running trials (constant liar).
    assert states[3:] == [State.RUNNING] * (len(states) - 3) and len(states) == 6


def test_best_objective_tells_the_best_error(client, sessions):
    sweep = post(client, {**TPE, "objective": "best"})
    run_id = sweep["runs"][0]["id"]
    finish(sessions, run_id, final_error=0.4)
    with sessions() as session:
        session.get(Run, run_id).best_error = 0.125
        session.commit()
        study = search.study_of(session, session.get(Sweep, sweep["id"]))
    assert study.trials[0].value == 0.125


def test_a_concurrent_fill_never_adds_a_cell_for_a_slot_already_filled(client, sessions):
    sweep = post(client, TPE)
    with sessions() as session:
        again = store_sweeps.fill_slots(session, sweep["id"])  # a redelivered end, a reaper
        session.commit()
    assert again == [] and len(cells_of(sessions, sweep["id"])) == 2


def test_cancel_asks_nothing_more(client, sessions, queue_dir):
    sweep = post(client, TPE)
    cancelled = client.post(f"{API}/sweeps/{sweep['id']}/cancel").get_json()
    assert cancelled["status"] == "cancelled"
    with sessions() as session:
        assert store_sweeps.run_ended(session, sweep["id"]) == []
        session.commit()
    assert len(cells_of(sessions, sweep["id"])) == 2


def test_cmaes_asks_numeric_fields_within_bounds(client, sessions):
    sweep = post(client, {**TPE, "search": "cmaes",
                          "space": {"learning_rate": {"loguniform": [1e-3, 1.0]},
                                    "epochs": {"int": [5, 30]}}})
    assert sweep["kind"] == "cmaes" and sweep["total"] == 2
    for run in sweep["runs"]:
        assert 1e-3 <= run["config"]["learning_rate"] <= 1.0
        assert 5 <= run["config"]["epochs"] <= 30


def test_a_space_that_runs_out_ends_the_sweep_with_fewer_runs(client, sessions):
    sweep = post(client, {**TPE, "space": {"layers": SPACE["layers"]}, "max_concurrency": 1,
                          "trials": 10})
    pending = [sweep["runs"][0]["id"]]
    while pending:
        pending.extend(finish(sessions, pending.pop(), final_error=0.1))
    done = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert done["total"] == 3 and done["status"] == "succeeded"


def test_the_model_based_fields_are_in_the_openapi_document(client):
    doc = client.get(f"{API}/openapi.json").get_json()
    request = doc["components"]["schemas"]["SweepRequest"]["properties"]
    assert set(request["search"]["enum"]) == {"grid", "random", "tpe", "cmaes"}
    assert "space" in request and request["objective"]["enum"] == ["final", "best"]


def test_rebuilding_the_study_at_the_trials_bound_stays_bounded(sessions, client):
    """What one ask costs with 1000 stored runs (the trials bound): printed, and bounded
    loosely enough that a slow machine passes (no timing is asserted finely)."""
    sweep = post(client, {**TPE, "trials": 1000, "max_concurrency": 1})
    with sessions() as session:
        row = session.get(Sweep, sweep["id"])
        dataset_id = row.space["dataset_id"]
        template = row.space["template"]
        rng = __import__("random").Random(0)
        cells = []
        for i in range(1, 999):
            config = {"epochs": rng.randint(5, 30), "layers": rng.choice(
                SPACE["layers"]["choice"]), "learning_rate": 10 ** rng.uniform(-3, 0)}
            cells.append({"position": i, "config": config,
                          "config_hash": store_sweeps.config_hash(config),
                          "spec": search.spec_of(row.space, config), "dataset_id": dataset_id})
        ids = store_sweeps.create_cells(session, sweep["id"], cells)
        for run_id in ids:
            run = session.get(Run, run_id)
            run.status, run.final_error = "succeeded", rng.random()
        session.commit()
        assert template["dataset"] == "xor"
    with sessions() as session:
        started = time.perf_counter()
        proposed = search.propose(session, session.get(Sweep, sweep["id"]), 5,
                                  store_sweeps.config_hash)
        seconds = time.perf_counter() - started
    print(f"study rebuilt from 999 runs and one ask: {seconds * 1000:.0f} ms")
    assert len(proposed) == 1  # the budget allows one more, whatever the free slots
    assert proposed[0]["position"] == 999


def test_the_reaper_fills_a_slot_a_run_freed_without_filling_it(client, sessions):
    """A run that ended without the sweep's fill (a worker lost between the two, an older
    worker): the reaper's pass over unsettled sweeps asks its next run and sends it."""
    from types import SimpleNamespace

    from service.store import reaper

    sweep = post(client, {**TPE, "max_concurrency": 1})
    run_id = sweep["runs"][0]["id"]
    with sessions() as session:
        run = session.get(Run, run_id)
        run.status, run.final_error = "succeeded", 0.5
        session.commit()
    sent = []
    timings = SimpleNamespace(stale_seconds=60, max_attempts=3, unsent_seconds=60,
                              resend_seconds=3600)
    reaper.reap(sessions, sent.append, timings)
    cells = cells_of(sessions, sweep["id"])
    assert len(cells) == 2 and cells[1][2]  # asked and dispatched
    with sessions() as session:
        new_id = store_sweeps.cells(session, sweep["id"])[1][1].id
    assert sent == [new_id]
    reaper.reap(sessions, sent.append, timings)  # the slot is full: nothing more
    assert len(cells_of(sessions, sweep["id"])) == 2 and sent == [new_id]
