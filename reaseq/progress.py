"""Progress bars that redraw in place on a terminal and stay silent in a log file or pipe."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], desc: str, unit: str = "it", leave: bool = False) -> Iterable[T]:
    """``iterable`` behind a tqdm bar on stderr; off where stderr is no terminal, since each redraw there is a line."""
    # disable=None is tqdm's "off unless a terminal"; not passed where TQDM_DISABLE is set, which an argument overrides.
    off_unless_terminal = {} if "TQDM_DISABLE" in os.environ else {"disable": None}
    return tqdm(iterable, desc=desc, unit=unit, leave=leave, **off_unless_terminal)
