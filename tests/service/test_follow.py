"""Following a run polls soon after submitting, then less often (service/cli/follow.py)."""

from service.cli import follow


def test_polls_start_fast_and_back_off_to_the_interval(monkeypatch):
    waits = []
    monkeypatch.setattr(follow.time, "sleep", waits.append)
    states = iter([{"n": n} for n in range(1, 9)])
    shown = []
    final = follow.poll_until(lambda: next(states), {"n": 0}, shown.append,
                              lambda current: current["n"] == 8, poll=0.2)
    assert final == {"n": 8} and [s["n"] for s in shown] == list(range(9))
    assert waits == [0.025, 0.05, 0.1, 0.2, 0.2, 0.2, 0.2, 0.2]


def test_a_short_interval_is_never_exceeded(monkeypatch):
    waits = []
    monkeypatch.setattr(follow.time, "sleep", waits.append)
    states = iter([{"n": 1}, {"n": 2}])
    follow.poll_until(lambda: next(states), {"n": 0}, lambda _: None,
                      lambda current: current["n"] == 2, poll=0.01)
    assert waits == [0.01, 0.01]
