"""How the benchmark scripts report their figures: an aligned two-column table, optionally a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["report"]


def report(figures: dict[str, Any], json_path: Path | None = None) -> None:
    """Print ``name  value`` lines (floats to 4 significant digits) and write the figures to ``json_path`` if given."""
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:>{width}}  {value:.4g}" if isinstance(value, float) else f"{key:>{width}}  {value}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {json_path}")
