"""Descent's service: the REST API, the store and the command line."""
