"""Progress bars for long work, quiet when there is no label or no terminal wish."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, total: int | None, desc: str | None, unit: str = "it", initial: int = 0, **kwargs: Any) -> tqdm:
    """Return a tqdm bar on stderr; disabled when ``desc`` is None or PORELAB_PROGRESS=0."""
    disabled = desc is None or os.environ.get("PORELAB_PROGRESS", "1") == "0"
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=disabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )
