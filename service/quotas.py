"""Per-user quotas, checked whenever work or data is added: runs queued or running at once
(DESCENT_MAX_ACTIVE_RUNS) and bytes stored (DESCENT_MAX_USER_BYTES: datasets, and every
run's parameters and history)."""

from service.errors import QuotaExceeded
from service.store import usage


def check_quotas(session, owner: str, limits, runs: int = 0, stored_bytes: int = 0) -> None:
    """Check that ``owner`` may add ``runs`` active runs and ``stored_bytes`` bytes to what
    the store (and this session, flushed) already holds. Call it in the transaction that
    stores the new work, right before: it locks ``owner``'s counts until that transaction
    ends, so two submits never both count the same room. Over a quota it rolls back what the
    session holds and raises QuotaExceeded naming the quota."""
    usage.lock_owner(session, owner)
    problems = {}
    if runs:
        active = usage.active_runs(session, owner)
        if active + runs > limits.max_active_runs:
            problems["DESCENT_MAX_ACTIVE_RUNS"] = (
                f"{active} runs queued or running and {runs} more would exceed the "
                f"limit of {limits.max_active_runs} per user")
    stored = usage.stored_bytes(session, owner)
    if stored + stored_bytes > limits.max_user_bytes:
        problems["DESCENT_MAX_USER_BYTES"] = (
            (f"{_size(stored)} stored or reserved and {_size(stored_bytes)} more"
             if stored_bytes else f"{_size(stored)} stored or reserved with this request's")
            + f" would exceed the limit of {_size(limits.max_user_bytes)} per user")
    if problems:
        session.rollback()
        raise QuotaExceeded(problems)


def _size(n: int) -> str:
    """Bytes for people: 64.0 MiB (67108864 bytes)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"
