"""Reading a small JSON file (cluster file, key file) with one-line errors; writing a cache
file atomically."""
from __future__ import annotations

import json
import os
import tempfile
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


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON beside `path`, then rename over it: concurrent roles never read half a
    file. For caches, which are an optimisation: a read-only or full disk is not an error."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", suffix=".json",
                                         delete=False, encoding="utf-8") as f:
            tmp_name = f.name
            json.dump(data, f, indent=1)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError:
        pass
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
