"""Runs, sweeps and datasets belong to the user whose token created them: another user gets
the same 404 as for a missing one, never sees them in lists, and learns nothing from
filters (a where= on their dataset names included). Built-in datasets are everyone's; a
user's own dataset shadows a public one of the same name."""

import numpy as np
import pytest

from service.store import datasets as store_datasets
from service.store.models import Run, Sweep

from .conftest import API, all_runs, error_of, submit, train_run

GRID = {"base": {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5, "batch_mode": "full"},
        "grid": {"learning_rate": [0.1, 1.0]}}
XOR_X = [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.fixture
def bob(client_of):
    return client_of("bob")


def same_404(response, missing):
    """``response`` is the 404 a missing resource gets, but for the id in the message."""
    error = error_of(response, 404)
    other = error_of(missing, 404)
    assert error["code"] == other["code"] == "not_found"
    assert error["fields"] == other["fields"] == {}
    return error


def test_runs_are_their_owners_only(client, bob, sessions):
    run_id = submit(client, tags={"team": "a"})["id"]
    train_run(sessions, run_id)
    queued = submit(client)["id"]
    with sessions() as session:
        assert session.get(Run, run_id).owner == "alice"
    missing = 10**9
    for path in ("", "/history", "/history?format=csv", "/params", "/params?format=npz"):
        mine = client.get(f"{API}/runs/{run_id}{path}")
        assert mine.status_code == 200, (path, mine.get_data(True))
        mine.close()  # a streamed body: closed as a server closes it
        same_404(bob.get(f"{API}/runs/{run_id}{path}"), bob.get(f"{API}/runs/{missing}{path}"))
    predict = {"inputs": [[0, 1]]}
    assert client.post(f"{API}/runs/{run_id}/predict", json=predict).status_code == 200
    same_404(bob.post(f"{API}/runs/{run_id}/predict", json=predict),
             bob.post(f"{API}/runs/{missing}/predict", json=predict))
    same_404(bob.post(f"{API}/runs/{queued}/cancel"), bob.post(f"{API}/runs/{missing}/cancel"))
    assert client.get(f"{API}/runs/{queued}").get_json()["status"] == "queued"  # untouched
    assert client.post(f"{API}/runs/{queued}/cancel").status_code == 202

    # Lists: bob sees only his own, whatever the filter.
    bobs = submit(bob)["id"]
    assert {r["id"] for r in all_runs(client)} == {run_id, queued}
    assert [r["id"] for r in all_runs(bob)] == [bobs]
    for params in ({"dataset": "xor"}, {"tag.team": "a"}, {"status": "succeeded"},
                   {"where": f"id = {run_id}"}, {"where": "dataset = xor"},
                   {"where": "tag.team = a or id >= 0"}, {"order_by": "final_error"}):
        assert [r["id"] for r in all_runs(bob, **params)] == \
            ([bobs] if params in ({"dataset": "xor"}, {"where": "dataset = xor"},
                                  {"where": "tag.team = a or id >= 0"},
                                  {"order_by": "final_error"}) else []), params


def test_where_by_dataset_name_tells_nothing_of_other_users(client, bob, sessions):
    secret = client.post(f"{API}/datasets", json={"name": "secret-plans", "X": XOR_X,
                                                  "y": [0, 1, 1, 0]})
    assert secret.status_code == 201
    run_id = submit(client, dataset="secret-plans")["id"]
    assert [r["id"] for r in all_runs(client, where='dataset = "secret-plans"')] == [run_id]
    assert [r["id"] for r in all_runs(client, dataset="secret-plans")] == [run_id]
    for where in ('dataset = "secret-plans"', 'dataset in ("secret-plans", xor)',
                  'dataset >= "s"', "dataset != xor", f"dataset = {secret.get_json()['id']}"):
        assert all_runs(bob, where=where) == [], where
    assert all_runs(bob, dataset="secret-plans") == []
    assert all_runs(bob, dataset=str(secret.get_json()["id"])) == []
    # Bob cannot train on it either: the same answer as a dataset that does not exist.
    for ref in ("secret-plans", secret.get_json()["id"]):
        response = bob.post(f"{API}/runs", json={"dataset": ref, "layers": [2, 1]})
        assert error_of(response, 422)["fields"] == {"dataset": f"no dataset named {ref!r}"}


def test_datasets_are_their_owners_and_built_ins_everyones(client, bob, sessions):
    mine = client.post(f"{API}/datasets", json={"name": "mine", "X": XOR_X, "y": [0, 1, 1, 0]})
    assert mine.status_code == 201
    dataset_id = mine.get_json()["id"]
    for ref in ("mine", dataset_id):
        assert client.get(f"{API}/datasets/{ref}").status_code == 200
        same_404(bob.get(f"{API}/datasets/{ref}"), bob.get(f"{API}/datasets/nothing"))
        same_404(bob.get(f"{API}/datasets/{ref}?format=npz"),
                 bob.get(f"{API}/datasets/nothing?format=npz"))
    assert bob.get(f"{API}/datasets/xor").status_code == 200  # built-ins: everyone's
    alices = [d["name"] for d in client.get(f"{API}/datasets").get_json()["datasets"]]
    bobs = [d["name"] for d in bob.get(f"{API}/datasets").get_json()["datasets"]]
    assert alices == ["mine", "xor"] and bobs == ["xor"]
    # Names are per user: bob may take "mine" too, and each sees their own.
    theirs = bob.post(f"{API}/datasets", json={"name": "mine", "X": XOR_X, "y": [1, 0, 0, 1]})
    assert theirs.status_code == 201 and theirs.get_json()["id"] != dataset_id
    assert client.get(f"{API}/datasets/mine?format=json").get_json()["y"] == [0, 1, 1, 0]
    assert bob.get(f"{API}/datasets/mine?format=json").get_json()["y"] == [1, 0, 0, 1]
    assert error_of(client.post(f"{API}/datasets", json={"name": "mine", "X": XOR_X,
                                                         "y": [0, 0, 0, 0]}), 409)


def test_a_users_dataset_shadows_a_public_one_of_the_same_name(client, bob, sessions):
    with sessions() as session:  # a public dataset (no owner), as built-ins are
        public = store_datasets.add_dataset(session, "shared", np.array(XOR_X, float),
                                            np.array([0, 0, 0, 1]))
        session.commit()
        public_id = public.id
    assert client.get(f"{API}/datasets/shared").get_json()["id"] == public_id
    own = client.post(f"{API}/datasets", json={"name": "shared", "X": XOR_X,
                                               "y": [0, 1, 1, 1]})
    assert own.status_code == 201
    assert client.get(f"{API}/datasets/shared").get_json()["id"] == own.get_json()["id"]
    assert bob.get(f"{API}/datasets/shared").get_json()["id"] == public_id
    run = submit(client, dataset="shared")
    assert run["dataset"] == {"id": own.get_json()["id"], "name": "shared"}
    assert submit(bob, dataset="shared")["dataset"]["id"] == public_id


def test_sweeps_are_their_owners_only(client, bob, sessions):
    created = client.post(f"{API}/sweeps", json=GRID)
    assert created.status_code == 202, created.get_json()
    sweep = created.get_json()
    with sessions() as session:
        assert session.get(Sweep, sweep["id"]).owner == "alice"
        owners = {session.get(Run, run["id"]).owner for run in sweep["runs"]}
    assert owners == {"alice"}  # the sweep's runs are its owner's
    missing = 10**6
    for path in ("", "?metric=final_accuracy"):
        assert client.get(f"{API}/sweeps/{sweep['id']}{path}").status_code == 200
        same_404(bob.get(f"{API}/sweeps/{sweep['id']}{path}"),
                 bob.get(f"{API}/sweeps/{missing}{path}"))
    same_404(bob.post(f"{API}/sweeps/{sweep['id']}/cancel"),
             bob.post(f"{API}/sweeps/{missing}/cancel"))
    for run in sweep["runs"]:
        same_404(bob.get(f"{API}/runs/{run['id']}"), bob.get(f"{API}/runs/{10**9}"))
    assert bob.get(f"{API}/sweeps").get_json()["sweeps"] == []
    assert [s["id"] for s in client.get(f"{API}/sweeps").get_json()["sweeps"]] == [sweep["id"]]
    assert all_runs(bob, sweep_id=sweep["id"]) == []
    assert all_runs(bob, where=f"sweep_id = {sweep['id']}") == []
    assert len(all_runs(client, sweep_id=sweep["id"])) == 2
    # Still running for alice: bob's cancel changed nothing.
    assert client.get(f"{API}/sweeps/{sweep['id']}").get_json()["status"] == "queued"
    # The leaderboard is part of the sweep: bob's own sweep shows only his runs.
    theirs = bob.post(f"{API}/sweeps", json=GRID).get_json()
    assert {r["id"] for r in theirs["runs"]}.isdisjoint({r["id"] for r in sweep["runs"]})
    assert [s["id"] for s in bob.get(f"{API}/sweeps").get_json()["sweeps"]] == [theirs["id"]]


def test_a_sweep_preview_uses_only_visible_datasets(client, bob):
    assert client.post(f"{API}/datasets", json={"name": "mine", "X": XOR_X,
                                                "y": [0, 1, 1, 0]}).status_code == 201
    body = {**GRID, "base": {**GRID["base"], "dataset": "mine"}}
    assert client.post(f"{API}/sweeps/preview", json=body).status_code == 200
    error = error_of(bob.post(f"{API}/sweeps/preview", json=body), 422)
    assert error["fields"] == {"base.dataset": "no dataset named 'mine'"}


def test_a_sweep_cell_run_inherits_the_sweeps_owner_whoever_creates_it(client, sessions):
    from service.store import sweeps as store_sweeps

    xor_id = client.get(f"{API}/datasets/xor").get_json()["id"]
    spec = {"dataset": "xor", "layers": [2, 1], "learning_rate": 0.1, "batch_mode": "full",
            "batch_size": 4, "epochs": 1, "seed": 0}
    with sessions() as session:  # as a worker or the reaper would, with no request user
        sweep = store_sweeps.create_sweep(session, owner="carol", base=spec, space={},
                                          kind="grid")
        run_id = store_sweeps.create_cell(session, sweep.id, 0, {}, "0" * 64, spec, xor_id)
        session.commit()
        assert session.get(Run, run_id).owner == "carol"
    same_404(client.get(f"{API}/runs/{run_id}"), client.get(f"{API}/runs/{10**9}"))
