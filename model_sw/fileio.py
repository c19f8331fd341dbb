"""Results are written atomically: a run that dies never leaves a half-written file."""
import os
import tempfile


def write_atomic(path: str, content: str | bytes) -> None:
    """Write ``content`` (text or bytes) to a temporary file beside ``path``, then rename."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
