"""The command line's faces of optimizers, schedules, clipping and stopping on a plateau
(API.md section 1b): ``--set`` values as JSON and dotted fields, ``descent show``, the runs
table and queries, sweeps over these fields; against a real ``descent api`` subprocess. Runs
are trained in this process by the workers' own execute_run (no Celery)."""

import json
import re
import uuid

import pytest
import requests

from service.store import make_engine, make_sessionmaker

from .test_cli import auth, invoke, service_env, start_api, stop

SPEC = {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full", "epochs": 30}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(base URL, sessionmaker) of `descent api` on its own SQLite file, with no worker."""
    folder = tmp_path_factory.mktemp("optimizers-api")
    env = service_env(folder)
    process, base_url, log = start_api(folder, **env)
    engine = make_engine(env["DESCENT_DATABASE_URL"])
    try:
        yield base_url, make_sessionmaker(engine)
    finally:
        engine.dispose()
        stop(process, log, within=15)


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return str(path)


def submit(base_url: str, spec_file: str, *sets: str) -> dict:
    """`descent submit SPEC -s ...` and the run the API stored."""
    args = ["submit", spec_file]
    for item in sets:
        args += ["-s", item]
    result = invoke(args, env={"DESCENT_API_URL": base_url})
    assert result.exit_code == 0, result.output
    run_id = int(result.output.split()[2])
    return requests.get(f"{base_url}/api/v1/runs/{run_id}", headers=auth(base_url),
                        timeout=10).json()


def show_rows(output: str) -> dict:
    """{label: value} of the facts `descent show` prints before the spec."""
    facts = output.split("Spec")[0]
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1)
                for line in facts.splitlines() if line.strip())


def train(sessions, run_id: int) -> None:
    """What a worker does with the run: train it and store the outcome."""
    from workers.execute import execute_run

    assert execute_run(sessions, run_id, enqueue=lambda _id: None) is not None


# --- --set without a server --------------------------------------------------------------

UNREACHABLE = {"DESCENT_API_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize("value, message", [
    ('lr_schedule={"kind": cosine}', "lr_schedule: '{\"kind\": cosine}' is not valid JSON"),
    ("layers=[2, 4, 1", "layers: '[2, 4, 1' is not valid JSON"),
    ('name="unterminated', "name: '\"unterminated' is not valid JSON"),
    ("lr_schedule..kind=step", "empty field name"),
    ("learning_rate.kind=step", "learning_rate is 0.1, not an object"),
    ("no-equals-sign", "expects FIELD=VALUE"),
])
def test_bad_set_values_are_refused_before_anything_is_sent(tmp_path, value, message):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, "learning_rate": 0.1}))
    result = invoke(["submit", str(spec), "-s", value], env=UNREACHABLE)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "cannot reach" not in result.output  # refused before talking to the API


def test_set_values_parse_as_json_else_stay_strings():
    from service.cli.specfile import apply_overrides

    spec = apply_overrides({"dataset": "xor", "lr_schedule": {"kind": "cosine"},
                            "stop_on_plateau": None}, [
        "optimizer=adam", "beta2=0.99", "clip_norm=null", "shuffle=false", "seed=7",
        'tags={"team": "ml"}', "lr_schedule.lr_min=1e-4", "stop_on_plateau.metric=error",
        "stop_on_plateau.restore_best=false", "name=NaN", "activation=Infinity",
        "tags.owner=me", 'lr_schedule.kind="cosine"', "weight_decay=", "layers=[2,4,1]"])
    assert spec == {
        "dataset": "xor", "optimizer": "adam", "beta2": 0.99, "clip_norm": None,
        "shuffle": False, "seed": 7, "tags": {"team": "ml", "owner": "me"},
        "lr_schedule": {"kind": "cosine", "lr_min": 1e-4},
        "stop_on_plateau": {"metric": "error", "restore_best": False},
        "name": "NaN", "activation": "Infinity",  # not JSON numbers: strings, as typed
        "weight_decay": "", "layers": [2, 4, 1]}
    # A whole object replaces the one before; later dotted fields go into it, in order.
    spec = apply_overrides({"lr_schedule": {"kind": "cosine", "lr_min": 0.1}},
                           ['lr_schedule={"kind": "step"}', "lr_schedule.step_size=5"])
    assert spec["lr_schedule"] == {"kind": "step", "step_size": 5}


def test_the_wait_summary_says_a_run_stopped_on_a_plateau():
    from service.cli.runview import summary_line

    run = {"id": 3, "status": "succeeded", "epochs_done": 12, "epochs": 50,
           "final_error": 0.2, "best_error": 0.1, "best_epoch": 4, "stop_reason": "plateau",
           "spec": {"stop_on_plateau": {"metric": "val_error", "patience": 8}}}
    line = summary_line(run)
    assert "12/50 epochs" in line and "stopped on a plateau (best epoch 4)" in line
    assert "best 0.1," in line  # epoch 4 is the plateau rule's best, not the best error's
    run["spec"]["stop_on_plateau"]["metric"] = "error"  # with its min_delta, all the same
    assert "best 0.1," in summary_line(run)
    plain = {**run, "spec": {}, "stop_reason": None}
    assert "best 0.1 at epoch 4" in summary_line(plain) and "plateau" not in summary_line(plain)


# --- against `descent api` ---------------------------------------------------------------

@pytest.mark.slow
def test_submit_sets_the_optimizer_its_schedule_and_plateau(live, spec_file):
    base_url, _ = live
    run = submit(base_url, spec_file, "optimizer=adam", "beta2=0.99",
                 'lr_schedule={"kind": "cosine"}', "lr_schedule.lr_min=0.001",
                 "stop_on_plateau.metric=error", "stop_on_plateau.patience=3",
                 "weight_decay=0.01", "clip_norm=5")
    spec = run["spec"]
    assert (spec["optimizer"], spec["beta1"], spec["beta2"], spec["eps"]) == \
        ("adam", 0.9, 0.99, 1e-8)
    assert "momentum" not in spec
    assert spec["lr_schedule"] == {"kind": "cosine", "lr_min": 0.001}
    assert spec["stop_on_plateau"] == {"metric": "error", "patience": 3, "min_delta": 0.0,
                                       "restore_best": True}
    assert (spec["weight_decay"], spec["clip_norm"]) == (0.01, 5)
    assert run["stop_reason"] is None and run["best_epoch"] is None


@pytest.mark.slow
def test_fields_that_do_not_apply_are_named_and_exit_2(live, spec_file):
    base_url, _ = live
    result = invoke(["submit", spec_file, "-s", "optimizer=adam", "-s", "momentum=0.5",
                     "-s", "lr_schedule.kind=exponential", "-s", "lr_schedule.step_size=3"],
                    env={"DESCENT_API_URL": base_url})
    assert result.exit_code == 2, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert any(line.startswith("momentum:") and "does not apply to optimizer 'adam'" in line
               for line in lines), result.output
    assert any(line.startswith("lr_schedule.step_size:") for line in lines), result.output
    assert any(line.startswith("lr_schedule.gamma:") and "required" in line
               for line in lines), result.output


@pytest.mark.slow
def test_show_says_what_trained_and_why_it_stopped(live, spec_file):
    base_url, sessions = live
    env = {"DESCENT_API_URL": base_url}
    # min_delta larger than any error: no epoch improves, training stops after `patience`.
    run = submit(base_url, spec_file, "optimizer=nesterov", "momentum=0.5",
                 "learning_rate=0.5", 'lr_schedule={"kind": "step", "step_size": 10}',
                 'stop_on_plateau={"metric": "error", "patience": 4, "min_delta": 10}')
    queued = invoke(["show", str(run["id"])], env=env)
    assert queued.exit_code == 0, queued.output
    rows = show_rows(queued.output)
    assert rows["optimizer"] == "nesterov (momentum 0.5)"
    assert rows["weight decay"] == "0.0" and rows["clip norm"] == "none"
    assert rows["lr schedule"] == "step (step_size 10, gamma 0.1)"
    assert rows["plateau"] == ("stop after 4 epochs without error improving by more than "
                               "10.0; restore the best epoch's parameters")
    assert "stop reason" not in rows

    train(sessions, run["id"])
    shown = invoke(["show", str(run["id"])], env=env)
    assert shown.exit_code == 0, shown.output
    rows = show_rows(shown.output)
    assert "succeeded" in rows["status"] and rows["epochs"] == "4/30"
    assert rows["stop reason"] == \
        "plateau: no error improvement for 4 epochs, stopped after epoch 4 of 30"
    assert rows["best epoch"] == \
        "0 (last to improve error by more than 10.0, its parameters kept)"
    assert "at epoch" not in rows["best error"]  # epoch 0 is the plateau rule's best
    as_json = json.loads(invoke(["show", str(run["id"]), "--json"], env=env).output)
    assert (as_json["stop_reason"], as_json["best_epoch"], as_json["epochs_done"]) == \
        ("plateau", 0, 4)
    assert [row["epoch"] for row in as_json["history"]] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_runs_show_filter_and_sort_by_the_new_fields(live, spec_file):
    base_url, sessions = live
    env = {"DESCENT_API_URL": base_url}
    group = f"g{uuid.uuid4().hex[:8]}"
    tag = f"tags.group={group}"
    adam = submit(base_url, spec_file, tag, "optimizer=adam", "learning_rate=0.05",
                  'stop_on_plateau={"metric": "error", "patience": 2, "min_delta": 10}')
    plain = submit(base_url, spec_file, tag)
    momentum = submit(base_url, spec_file, tag, "optimizer=momentum",
                      'stop_on_plateau={"metric": "error", "patience": 5}', "epochs=8")
    for run in (adam, plain, momentum):
        train(sessions, run["id"])

    table = invoke(["runs", "--tag", f"group={group}"], env=env)
    assert table.exit_code == 0, table.output
    header, _, *lines = [[cell.strip() for cell in re.split("[┃│]", line)]
                         for line in table.output.splitlines()]
    assert header[4:7] == ["layers", "optimizer", "lr"], header
    optimizers = {int(cells[0]): cells[5] for cells in lines}
    assert optimizers == {adam["id"]: "adam", plain["id"]: "sgd",
                          momentum["id"]: "momentum"}

    def ids(*args):
        result = invoke(["runs", "--json", "--tag", f"group={group}", *args], env=env)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.output.splitlines()]

    assert ids("--where", 'optimizer = "adam"') == [adam["id"]]
    assert ids("--where", "optimizer in (sgd, momentum)") == [momentum["id"], plain["id"]]
    assert ids("--stop-reason", "plateau") == [adam["id"]]
    assert ids("--optimizer", "adam", "--optimizer", "sgd,nesterov") == [plain["id"], adam["id"]]
    # best_epoch: 0 for adam's plateau, the best error's epoch for the other two; the plain
    # run learns all along (its best epoch is its last, 30).
    assert ids("--order-by", "-best_epoch")[0] == plain["id"]
    assert ids("--order-by", "best_epoch")[0] == adam["id"]


@pytest.mark.slow
def test_sweep_preview_over_optimizers_and_schedule_objects(live, tmp_path):
    base_url, _ = live
    body = {"base": {**SPEC, "lr_schedule": {"kind": "step", "step_size": 5}},
            "grid": {"optimizer": ["sgd", "adam"], "lr_schedule.gamma": [0.5, 0.9],
                     "learning_rate": [0.01, 0.1]}}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))
    preview = invoke(["sweep", str(path), "--preview"], env={"DESCENT_API_URL": base_url})
    assert preview.exit_code == 0, preview.output
    assert "8 configurations" in preview.output
    header = next(line for line in preview.output.splitlines() if "optimizer" in line)
    assert "lr_schedule.gamma" in header and "learning_rate" in header

    objects = {"base": SPEC, "grid": {"lr_schedule": [{"kind": "constant"},
                                                      {"kind": "cosine", "lr_min": 0.01}]}}
    path.write_text(json.dumps(objects))
    preview = invoke(["sweep", str(path), "--preview"], env={"DESCENT_API_URL": base_url})
    assert preview.exit_code == 0, preview.output
    assert '{"kind": "cosine", "lr_min": 0.01}' in preview.output

    bad = {"base": SPEC, "grid": {"optimizer": ["adam", "rmsprop"]}}
    path.write_text(json.dumps(bad))
    result = invoke(["sweep", str(path)], env={"DESCENT_API_URL": base_url})
    assert result.exit_code == 2 and "grid.optimizer[1]" in result.output, result.output


def test_the_example_sweep_compares_the_optimizers_on_digits(client):
    from pathlib import Path

    body = json.loads((Path(__file__).resolve().parents[2] / "examples" /
                       "sweep-optimizers.json").read_text())
    assert body["base"]["dataset"] == "digits"
    response = client.post("/api/v1/sweeps/preview", json=body)
    assert response.status_code == 200, response.get_json()
    configs = [c["config"] for c in response.get_json()["configurations"]]
    assert {c["optimizer"] for c in configs} == {"sgd", "momentum", "nesterov", "adam",
                                                "adamw"}
    for name in ("sgd", "adam"):
        assert len({c["learning_rate"] for c in configs if c["optimizer"] == name}) >= 3
    assert len(configs) <= 30  # a few minutes on two cores

