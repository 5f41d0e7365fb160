"""Writing a conversion's results: stage every file in a temp directory, then move them into place.

Refuses to overwrite existing files without ``force`` (checked before any work starts); on failure the staging
directory is removed and the output directory is left exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgekit.errors import FileExistsRefusal, UsageError
from edgekit.fsutil import fsync_dir


class Staging:
    def __init__(self, out_dir: str | os.PathLike, names: list[str], force: bool = False):
        self.out_dir = Path(out_dir)
        self.names = list(names)
        self.force = force
        self.tmp: Path | None = None

    def check(self) -> None:
        """Fail fast: existing outputs without --force, an output path that is a file, a missing parent."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise FileExistsRefusal(f"{self.out_dir} exists and is not a directory",
                                    hint="pass a directory to --output")
        parent = self.out_dir.parent
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"the parent {parent} of --output is a file, not a directory",
                             hint="pass an --output path inside a directory")
        if not parent.is_dir():
            raise UsageError(f"the parent directory {parent} of --output does not exist", hint="create it first")
        # where files will be staged (the parent) and placed (the output directory, if it exists) must be writable
        self._probe(parent)
        if self.out_dir.is_dir():
            self._probe(self.out_dir)
        existing = [n for n in self.names if (self.out_dir / n).exists()]
        if existing and not self.force:
            raise FileExistsRefusal(f"{self.out_dir} already holds {', '.join(existing)}")

    def _probe(self, directory: Path) -> None:
        """Create and remove a file in ``directory``: the only reliable test (permissions, read-only or virtual
        file systems such as /proc, root squashing) that the writes after the conversion will succeed."""
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.out_dir.name}.probe-", dir=directory)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            raise UsageError(f"cannot write to {directory} for --output {self.out_dir}: {exc.strerror}",
                             hint="choose a writable --output directory") from None

    def __enter__(self) -> "Staging":
        self.check()
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.staging-", dir=self.out_dir.parent))
        return self

    def path(self, name: str) -> Path:
        assert self.tmp is not None  # internal invariant, not input validation
        return self.tmp / name

    def write(self, name: str, data: bytes) -> Path:
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return p

    def commit(self) -> dict[str, Path]:
        """Move every staged file into the output directory (os.replace each), then fsync the directory."""
        self.check()
        self.out_dir.mkdir(exist_ok=True)
        placed = {}
        for name in self.names:
            src = self.path(name)
            if src.exists():
                os.replace(src, self.out_dir / name)
                placed[name] = self.out_dir / name
        fsync_dir(self.out_dir)
        return placed

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
