"""`python -m workers.start` (the worker `descent up` starts) says in one line, not Celery's
nine, that it runs as root."""

import warnings

from celery.exceptions import SecurityWarning

from workers import start


def warnings_as(euid: int, monkeypatch) -> list:
    """The warnings left once shorten_root_warning ran as ``euid`` and Celery warned."""
    monkeypatch.setattr(start.os, "geteuid", lambda: euid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start.shorten_root_warning()
        warnings.warn(SecurityWarning("You're running the worker with superuser privileges"))
    return caught


def test_as_root_celerys_security_warning_becomes_one_line(monkeypatch, capsys):
    assert warnings_as(0, monkeypatch) == []
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: the worker runs as root; Celery advises an unprivileged user for workers"]


def test_as_another_user_nothing_changes(monkeypatch, capsys):
    assert len(warnings_as(1000, monkeypatch)) == 1
    assert capsys.readouterr().err == ""
