"""``python -m service.cli``: the ``descent`` command (how ``descent up`` starts its API)."""

from service.cli import main

main()
