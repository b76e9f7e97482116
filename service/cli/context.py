"""What every command shares from click: its context settings, and the invocation's one
``Settings``, read from the environment the first time a command asks for it and passed
down from there."""

from __future__ import annotations

import functools

import click

from service.settings import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


def settings_of(ctx: click.Context) -> Settings:
    """The Settings of this invocation: the root context's object (tests may pass one as
    ``obj``), else read from the environment now and kept there."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings.from_env()
    return root.obj


def pass_settings(function):
    """Decorate a command callback to receive the invocation's Settings first."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(settings_of(click.get_current_context()), *args, **kwargs)

    return wrapper
