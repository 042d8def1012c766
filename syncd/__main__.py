"""``python -m syncd``: the same as the ``syncd`` console script."""

from syncd.entry import main

main()
