"""service.trainingview: how `descent show` and the run page word a run's optimizer settings
and how it stopped."""

from service import runspec, trainingview
from service.trainingview import outcome_rows, training_rows

PLATEAU = {"metric": "error", "patience": 3, "min_delta": 0.0, "restore_best": True}


def test_only_the_parameters_of_the_chosen_optimizer_and_schedule_show():
    spec = {"optimizer": "adamw", "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "momentum": 0.5,
            "weight_decay": 0.01, "clip_norm": None,
            "lr_schedule": {"kind": "exponential", "gamma": 0.97, "lr_min": 0.1}}
    assert dict(training_rows(spec)) == {
        "optimizer": "adamw (beta1 0.9, beta2 0.99, eps 1e-08)", "weight decay": "0.01",
        "clip norm": "none", "lr schedule": "exponential (gamma 0.97)", "plateau": "off"}
    # A spec stored before optimizers existed trained with plain gradient descent.
    assert dict(training_rows({"learning_rate": 0.5}))["optimizer"] == "sgd"
    assert dict(training_rows({"optimizer": "momentum", "momentum": 0.8}))["optimizer"] == \
        "momentum (momentum 0.8)"


def test_how_a_finished_run_stopped():
    spec = {"stop_on_plateau": PLATEAU}
    assert outcome_rows(spec, "succeeded", 7, 50, "plateau", 4) == [
        ("stop reason", "plateau: no error improvement for 3 epochs, stopped after epoch 7 "
                        "of 50"),
        ("best epoch", "4 (lowest error, its parameters kept)")]
    # Ran every epoch: the best epoch's parameters are kept all the same.
    assert outcome_rows(spec, "succeeded", 50, 50, None, 48) == [
        ("stop reason", "none: no plateau, ran all 50 epochs"),
        ("best epoch", "48 (lowest error, its parameters kept)")]
    # A diverged run keeps its last parameters; keep_best off keeps them too.
    assert outcome_rows(spec, "diverged", 9, 50, None, 2) == [
        ("best epoch", "2 (lowest error)")]
    assert outcome_rows({"stop_on_plateau": {**PLATEAU, "restore_best": False}},
                        "succeeded", 50, 50, None, 48)[1] == ("best epoch", "48 (lowest error)")
    # With a min_delta the best epoch is the last one that improved by more than it.
    assert outcome_rows({"stop_on_plateau": {**PLATEAU, "min_delta": 0.5}}, "succeeded", 9,
                        50, "plateau", 6)[1] == \
        ("best epoch", "6 (last to improve error by more than 0.5, its parameters kept)")
    # Without a plateau rule, nothing to say.
    assert outcome_rows({}, "succeeded", 50, 50, None, 50) == []


def test_its_names_are_the_run_specs():
    """trainingview keeps its own copy (the command line must not load the kernels)."""
    assert trainingview.OPTIMIZER_PARAMS == runspec.OPTIMIZER_PARAMS
    assert tuple(trainingview.OPTIMIZER_PARAMS) == runspec.OPTIMIZER_NAMES
    assert trainingview.SCHEDULE_PARAMS == {
        kind: (*required, *optional) for kind, (required, optional) in
        runspec.SCHEDULE_KEYS.items()}
    assert trainingview.PLATEAU_DEFAULTS == runspec.PLATEAU_DEFAULTS


def test_the_command_line_does_not_load_the_kernels():
    import subprocess
    import sys

    code = ("import sys, service.cli; "
            "print(sorted(m for m in ('kernels', 'numba', 'service.runspec') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_eval_every_and_threads_show_when_not_their_defaults():
    plain = {"optimizer": "sgd", "eval_every": 1, "threads": 1}
    assert "evaluated" not in dict(training_rows(plain))
    rows = dict(training_rows({**plain, "eval_every": 10, "threads": 2}))
    assert rows["evaluated"] == "every 10 epochs and the last"
    assert rows["Threads"] == "2"
