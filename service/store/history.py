"""A run's history read in pages, for responses of any length: never every epoch of a run as
Python objects at once."""

from typing import Iterator, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Epoch

HISTORY_COLUMNS = ("epoch", "error", "accuracy", "val_error", "val_accuracy", "seconds")
PAGE_ROWS = 2_000


def history_pages(session: Session, run_id: int, positions: Optional[list[int]] = None,
                  page_rows: int = PAGE_ROWS) -> Iterator[list[tuple]]:
    """A run's history in epoch order, as pages of at most ``page_rows`` rows (tuples of
    HISTORY_COLUMNS' values), one keyset query per page. With ``positions`` (indexes of rows
    in the history, as ``history_spread`` gives), only those rows.

    Each page is read in a transaction of its own (ended before the page is handed on): a
    client may take its time over a long download, and an open transaction would hold a
    connection, and on SQLite the write lock, all that time."""
    columns = [getattr(Epoch, name) for name in HISTORY_COLUMNS]
    keep = None if positions is None else set(positions)
    last_epoch, position = None, 0
    while True:
        stmt = select(*columns).where(Epoch.run_id == run_id)
        if last_epoch is not None:
            stmt = stmt.where(Epoch.epoch > last_epoch)
        rows = session.execute(stmt.order_by(Epoch.epoch).limit(page_rows)).all()
        session.commit()  # nothing was written: this only ends the read
        if not rows:
            return
        last_epoch = rows[-1][0]
        if keep is not None:
            rows = [row for i, row in enumerate(rows, start=position) if i in keep]
        position += page_rows
        yield rows


def history_spread(session: Session, run_id: int, max_points: int) -> Optional[list[int]]:
    """The positions of the rows ``runs.downsample`` keeps of a run's history (the first, the
    last, the best and evenly spread ones), found by aggregate queries; None when it keeps
    every row."""
    of_run = Epoch.run_id == run_id
    n = session.scalar(select(func.count()).select_from(Epoch).where(of_run))
    if n <= max_points:
        return None
    best_epoch = session.scalar(select(Epoch.epoch).where(of_run, Epoch.error.is_not(None))
                                .order_by(Epoch.error, Epoch.epoch).limit(1))
    best = 0 if best_epoch is None else session.scalar(
        select(func.count()).select_from(Epoch).where(of_run, Epoch.epoch < best_epoch))
    return spread_positions(n, best, max_points)


def spread_positions(n: int, best: int, max_points: int) -> list[int]:
    """At most ``max_points`` (>= 3, < ``n``) sorted indexes of ``n`` rows, evenly spread,
    always with the first, the last and ``best``."""
    keep = {0, n - 1, best}
    slots = max_points - (len(keep) - 2)  # evenly spread points, first and last included
    keep.update(round(i * (n - 1) / (slots - 1)) for i in range(slots))
    if len(keep) > max_points:  # the best displaced a spread point: drop its neighbour
        spread = sorted(keep - {0, n - 1, best}, key=lambda i: abs(i - best))
        keep -= set(spread[:len(keep) - max_points])
    return sorted(keep)
