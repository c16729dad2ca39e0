"""Reading a small JSON file (cluster file, key file) with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: str | Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """The JSON object in `path`; any problem raises `error` naming `what` and the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {p} is not valid JSON: {exc.msg} at line {exc.lineno} "
                    f"column {exc.colno}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {p}: expected a JSON object, got {type(data).__name__}")
    return data
