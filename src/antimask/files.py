"""Crash-safe file writing: every file is written beside its target and renamed into place."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

# The process's umask, read once here: os.umask can only be read by setting it, which would race with files other
# threads create meanwhile (022 in between, the usual one). A new file gets the mode open() would give it (0o666 less
# this), not mkstemp's 0o600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash or a full disk while writing leaves the previous ``path`` untouched. The file keeps the mode of the
    one it replaces, and a new one gets the umask's, as if written in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        try:
            os.chmod(tmp_path, mode)
        except PermissionError:  # a file system without modes (vfat, some mounts): the contents still go in
            pass
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 4 MB blocks (photos, weights files, model files)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return Path(path)


def atomic_save_png(path: str | Path, image: np.ndarray, text: Optional[dict[str, str]] = None) -> Path:
    """A uint8 image (H, W, 3) RGB or (H, W) gray as a PNG with ``text`` chunks; raises when it cannot be written."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def atomic_write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Rows of dicts as CSV; the header is the union of their keys in first-seen order."""
    import csv
    import io

    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


class WeightsFileError(ValueError):
    """A weights file that cannot be read safely; ``unreadable`` says whether reading itself failed."""

    def __init__(self, message: str, unreadable: bool):
        super().__init__(message)
        self.unreadable = unreadable


# Keys under which training scripts commonly nest the state dict.
_STATE_WRAPPERS = ("state_dict", "model", "module", "state_dict_ema")


def read_state_dict(path: str | Path) -> dict:
    """A state dict of tensors from a .safetensors or torch file, never unpickling objects.

    torch files load with ``weights_only=True``; a wrapping dict (``state_dict``, ``model``, ...) is
    unwrapped. Raises ``WeightsFileError`` naming what went wrong; callers add where the file belongs.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt, foreign or code-carrying files all get one answer
        raise WeightsFileError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", True) from None
    for wrapper in _STATE_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsFileError(f"not a state dict of tensors (got {type(state).__name__})", False)
    return state


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | Path) -> Any:
    with open(path) as fh:
        return json.load(fh)
