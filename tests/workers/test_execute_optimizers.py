"""workers.execute with the optimizer fields (issue 13): the worker trains what the spec
says (the history and parameters kernels.train gives for it), a run stopped on a plateau ends
succeeded with stop_reason and best_epoch, restore_best's parameters are stored as the final
ones, a spec stored before the fields existed trains as before, and sweeps (successive
halving included) go on with plateau-stopped runs."""

import numpy as np
import pytest
from sqlalchemy import update

import kernels
from service import sweepspace
from service.runspec import OPTIMIZER_FIELDS, complete_spec
from service.store import Run
from service.store import datasets as store_datasets
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from workers.execute import execute_run

from .conftest import store_run
from .test_execute import assert_same_params, errors_of, independent_split, load

NUMERIC = ("layers", "activation", "output_activation", "loss", "learning_rate", "batch_mode",
           "batch_size", "epochs", "seed", "shuffle", "init", "dtype")


def direct(spec, **overrides):
    """kernels.train for a stored spec, with every optimizer field it holds."""
    spec = {**spec, **overrides}
    X, y = kernels.load_dataset(spec["dataset"])
    validation = None
    if spec.get("validation_split"):
        X, y, Xv, yv = independent_split(X, y, spec["validation_split"], spec["seed"])
        validation = (Xv, yv)
    return kernels.train(X, y, validation=validation,
                         **{k: spec[k] for k in NUMERIC + OPTIMIZER_FIELDS if k in spec})


PLATEAU_RUN = {"dataset": "circles", "layers": [2, 8, 1], "learning_rate": 0.05,
               "batch_size": 16, "epochs": 400, "optimizer": "adam",
               "lr_schedule": {"kind": "cosine"},
               "stop_on_plateau": {"metric": "error", "patience": 5, "min_delta": 1e-3}}


def test_adam_cosine_plateau_run_ends_succeeded_with_its_best_parameters(sessions):
    run_id = store_run(sessions, **PLATEAU_RUN)
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    want = direct(run.spec)
    assert want.stop_reason == "plateau"  # the case this test is about
    assert run.status == "succeeded" and run.stop_reason == "plateau"
    assert run.epochs_done == want.epochs_done < run.epochs
    assert run.best_epoch == want.best_epoch
    assert run.epochs_done - run.best_epoch == 5  # patience epochs without improvement
    assert [r.epoch for r in rows] == list(range(run.epochs_done + 1))
    assert np.array_equal(errors_of(rows), want.errors)
    assert run.final_error == want.errors[-1] and run.best_error == want.errors.min()
    assert_same_params(params["final"], want.params)
    assert_same_params(params["initial"], want.initial_params)


def test_restore_best_stores_the_parameters_of_the_best_epoch(sessions):
    # constant rates: a run of best_epoch epochs ends with the same parameters
    fields = {"dataset": "moons", "layers": [2, 6, 1], "learning_rate": 0.5, "epochs": 300,
              "optimizer": "momentum", "momentum": 0.8, "weight_decay": 1e-3,
              "validation_split": 0.3, "stop_on_plateau": {"patience": 4, "min_delta": 1e-4}}
    run_id = store_run(sessions, **fields)
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    assert run.stop_reason == "plateau" and 0 < run.best_epoch < run.epochs_done
    val = [r.val_error for r in rows]
    assert run.best_epoch == int(np.argmin(val))  # min_delta small: the best val_error
    shorter = direct(run.spec, epochs=run.best_epoch, stop_on_plateau=None)
    assert_same_params(params["final"], shorter.params)
    # without restore_best the final parameters are the last epoch's
    run_id = store_run(sessions, **{**fields, "stop_on_plateau": {
        "patience": 4, "min_delta": 1e-4, "restore_best": False}})
    assert execute_run(sessions, run_id) == "succeeded"
    last, _, last_params = load(sessions, run_id)
    assert last.epochs_done == run.epochs_done and last.best_epoch == run.best_epoch
    assert_same_params(last_params["final"],
                       direct(run.spec, epochs=run.epochs_done, stop_on_plateau=None).params)


def test_a_plateau_rule_that_never_fires_records_its_best_epoch(sessions):
    run_id = store_run(sessions, dataset="xor", layers=[2, 4, 1], learning_rate=0.5,
                       epochs=30, optimizer="nesterov", clip_norm=0.5,
                       lr_schedule={"kind": "step", "step_size": 10, "gamma": 0.5},
                       stop_on_plateau={"metric": "error", "patience": 1000})
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    want = direct(run.spec)
    assert run.stop_reason is None and run.epochs_done == 30
    assert run.best_epoch == want.best_epoch == int(np.argmin(want.errors))
    assert np.array_equal(errors_of(rows), want.errors)
    assert_same_params(params["final"], want.params)


@pytest.mark.parametrize("fields", [
    {"dataset": "xor", "layers": [2, 4, 1], "learning_rate": 0.5, "batch_size": 2,
     "epochs": 40},
    {"dataset": "circles", "layers": [2, 6, 1], "batch_mode": "full", "shuffle": False,
     "learning_rate": 1.0, "epochs": 30, "dtype": "float32", "validation_split": 0.2},
], ids=["xor-minibatch", "circles-full-float32"])
def test_a_spec_stored_before_the_optimizer_fields_trains_as_before(sessions, fields):
    run_id = store_run(sessions, **fields)
    with sessions() as session:  # the spec as the API stored it before issue 13
        run = session.get(Run, run_id)
        old = {k: v for k, v in run.spec.items() if k not in OPTIMIZER_FIELDS}
        session.execute(update(Run).where(Run.id == run_id).values(spec=old))
        session.commit()
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    assert "optimizer" not in run.spec
    X, y = kernels.load_dataset(fields["dataset"])
    validation = None
    if run.spec.get("validation_split"):
        X, y, Xv, yv = independent_split(X, y, run.spec["validation_split"], run.spec["seed"])
        validation = (Xv, yv)
    plain = kernels.train(X, y, validation=validation, **{k: run.spec[k] for k in NUMERIC})
    assert np.array_equal(errors_of(rows), plain.errors)
    assert_same_params(params["final"], plain.params)
    assert run.stop_reason is None and run.best_epoch == int(np.argmin(plain.errors))
    assert run.optimizer == "sgd"


def make_sweep(sessions, base, configs, early_stopping=None):
    """A grid sweep's cells (the API's work, done directly); returns (sweep id, run ids)."""
    with sessions() as session:
        dataset = store_datasets.find_dataset(session, base["dataset"])
        if dataset is None:
            X, y = kernels.load_dataset(base["dataset"])
            dataset = store_datasets.add_dataset(session, base["dataset"], X, y, builtin=True)
        sweep = store_sweeps.create_sweep(
            session, base=base, space={"x": configs}, kind="grid",
            early_stopping=early_stopping, metric="error")
        ids = [store_sweeps.create_cell(
            session, sweep.id, position, config, sweepspace.config_hash(config),
            complete_spec(sweepspace.apply_config(base, config)), dataset.id)
            for position, config in enumerate(configs)]
        session.commit()
        store_sweeps.fill_slots(session, sweep.id)
        session.commit()
        return sweep.id, ids


def test_successive_halving_goes_on_with_plateau_stopped_runs(db_sessions):
    """A run that stops on a plateau before a rung ends succeeded and takes no part in
    that rung; the others are cut or promoted there as usual; the sweep ends."""
    base = {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full", "epochs": 60,
            "optimizer": "momentum", "learning_rate": 0.5,
            "stop_on_plateau": {"metric": "error", "patience": 100}}
    configs = [  # the first never improves by 1.0: it stops at epoch 3, before the rung
        {"stop_on_plateau.min_delta": 1.0, "stop_on_plateau.patience": 3},
        {"learning_rate": 0.5}, {"learning_rate": 1e-5}]
    sweep_id, ids = make_sweep(db_sessions, base, configs,
                               early_stopping={"min_epochs": 10, "reduction_factor": 2})
    statuses = [execute_run(db_sessions, run_id, enqueue=lambda _id: None) for run_id in ids]
    assert statuses == ["succeeded", "succeeded", "stopped_early"]
    with db_sessions() as session:
        first = store_runs.get_run(session, ids[0])
        assert (first.stop_reason, first.epochs_done, first.best_epoch) == ("plateau", 3, 0)
        cut = store_runs.get_run(session, ids[2])
        assert cut.stop_reason is None and cut.epochs_done == 10
        assert store_sweeps.get_sweep(session, sweep_id).status == "succeeded"


def test_the_worker_passes_every_optimizer_field_of_the_spec():
    """workers.execute keeps its own copy of the names (workers import no service code but
    the store's): it must be the run spec's."""
    from workers import execute

    assert execute.OPTIMIZER_FIELDS == OPTIMIZER_FIELDS
    spec = complete_spec({"dataset": "xor", "layers": [2, 1], "optimizer": "adam",
                          "clip_norm": 2.0})
    arguments = execute.train_arguments(spec)
    assert {k: arguments[k] for k in OPTIMIZER_FIELDS if k in arguments} == {
        "optimizer": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
        "clip_norm": 2.0, "lr_schedule": {"kind": "constant"}, "stop_on_plateau": None}
