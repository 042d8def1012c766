"""The shared contract suite (test_contract.py) imports each vendor's kit from its directory
(``pagerduty/pd_kit.py``, ...), and the kits import contract_kit.py from here: put these
directories on sys.path before any test module in them is collected, whatever the order."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _path in (HERE, *(p for p in sorted(HERE.iterdir()) if p.is_dir() and p.name != "__pycache__")):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
