"""`python -m workers.start` (the worker `descent up` starts) says in one line, not Celery's
nine, that it runs as root."""

import warnings

from celery.exceptions import SecurityWarning

from workers import start


def test_as_root_celerys_security_warning_becomes_one_line(monkeypatch, capsys):
    monkeypatch.setattr(start.os, "geteuid", lambda: 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start.shorten_root_warning()
        warnings.warn(SecurityWarning("You're running the worker with superuser privileges"))
    assert caught == []
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: the worker runs as root; Celery advises an unprivileged user for workers"]


def test_as_another_user_nothing_changes(monkeypatch, capsys):
    monkeypatch.setattr(start.os, "geteuid", lambda: 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start.shorten_root_warning()
        warnings.warn(SecurityWarning("You're running the worker with superuser privileges"))
    assert len(caught) == 1
    assert capsys.readouterr().err == ""
