"""Pausing Python's cyclic garbage collector around work that allocates many objects
which all live until the work is done and form no reference cycles (a page of decoded
events, an account being folded): the automatic collector would scan them again and
again for nothing, while reference counting frees them anyway."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No automatic cyclic collection within the block (as it was, after it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
