"""The store: SQLAlchemy models, engines and the queries the API and workers share."""

from .db import make_engine, make_sessionmaker
from .models import FINAL_STATES, RUN_STATES, Base, Dataset, Epoch, Params, Run

__all__ = ["Base", "Dataset", "Epoch", "FINAL_STATES", "Params", "RUN_STATES", "Run",
           "make_engine", "make_sessionmaker"]
