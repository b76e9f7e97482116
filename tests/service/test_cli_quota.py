"""`descent submit` / `descent sweep` over a per-user quota: the API's 429 quota_exceeded
answer is a rejection of the input, printed with each quota it names (as a 422's fields are)
and exit code 2; a 429 that is only "slow down" stays exit code 1."""

import json

import pytest

from service.cli.client import ApiError
from service.cli.output import EXIT_FAILED, EXIT_INVALID, report_api_error
from service.settings import Settings

from .test_cli import XOR_SPEC, invoke, service_env, start_api, stop


@pytest.fixture(scope="module")
def one_run_api(tmp_path_factory):
    """`descent api` allowing one active run per user, with no worker: the first run stays
    queued, so every later one is over DESCENT_MAX_ACTIVE_RUNS."""
    folder = tmp_path_factory.mktemp("quota-api")
    process, base_url, log = start_api(folder, DESCENT_MAX_ACTIVE_RUNS="1",
                                       **service_env(folder))
    try:
        first = invoke(["submit", str(XOR_SPEC)], env={"DESCENT_API_URL": base_url})
        assert first.exit_code == 0, first.output
        yield base_url
    finally:
        stop(process, log, within=15)


def quota_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines()
            if line.strip().startswith("DESCENT_MAX_ACTIVE_RUNS:")]


@pytest.mark.slow
def test_submit_over_a_quota_names_it_and_exits_2(one_run_api):
    result = invoke(["submit", str(XOR_SPEC)], env={"DESCENT_API_URL": one_run_api})
    assert result.exit_code == EXIT_INVALID, result.output
    assert "rejected (HTTP 429, quota_exceeded)" in result.output
    [line] = quota_lines(result.output)
    assert "1 runs queued or running" in line and "limit of 1 per user" in line, line
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_sweep_over_a_quota_names_it_and_exits_2(one_run_api, tmp_path):
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"base": json.loads(XOR_SPEC.read_text()),
                                 "grid": {"learning_rate": [0.1, 0.5]}}))
    result = invoke(["sweep", str(sweep)], env={"DESCENT_API_URL": one_run_api})
    assert result.exit_code == EXIT_INVALID, result.output
    assert "quota_exceeded" in result.output
    assert len(quota_lines(result.output)) == 1, result.output


def report(exc: ApiError, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        report_api_error(exc, Settings())
    return exit_info.value.code, capsys.readouterr().err


def test_a_rate_limit_429_is_no_rejection(capsys):
    code, err = report(ApiError(429, "too_many_requests", "rate limit exceeded"), capsys)
    assert code == EXIT_FAILED
    assert "rate limit exceeded (HTTP 429, too_many_requests)" in err


def test_other_errors_print_their_fields_too(capsys):
    code, err = report(ApiError(409, "conflict", "not now", {"status": "already final"}),
                       capsys)
    assert code == EXIT_FAILED
    assert "  status: already final" in err


def test_fields_that_are_not_an_object_are_ignored(capsys):
    code, err = report(ApiError(429, "quota_exceeded", "over the quota", ["x"]), capsys)
    assert code == EXIT_INVALID
    assert "over the quota" in err and "x" not in err.split("over the quota", 1)[1]
