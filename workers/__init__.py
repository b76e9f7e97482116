"""Celery workers: load a run by id, train it with ``kernels``, record what happens."""
