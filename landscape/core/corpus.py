"""A real text corpus every machine with Python has: the standard library's own source files.

`stdlib_corpus` writes byte-level tokens (one id per byte, vocabulary 256) as nanoGPT-style flat
uint16 files, `stdlib_train.bin` and `stdlib_val.bin` (so `--dataset tokens:DIR/stdlib_train.bin`
finds its test split), and `stdlib_manifest.json`, which records what was read.

- Files: every `*.py` under `sysconfig.get_paths()["stdlib"]`, except those under a `test`,
  `tests`, `idle_test`, `site-packages`, `dist-packages`, `encodings` or `pydoc_data` folder
  (the test suites hold deliberately broken files; installed packages differ per machine;
  codec tables and the 0.75 MB help-text string are generated data, not code).
- Split, by file: a file is in val when the first 8 bytes of sha256(relative path), as an
  integer, are divisible by `val_every`; otherwise in train. A file is never in both.
- Order and size: within a split, files in the order of that hash (a fixed shuffle of the whole
  library, not just its first letters), concatenated as they are, cut at exactly `train_bytes`
  / `val_bytes` (the last file partly), so the corpus has the same size on every machine.
  The contents differ between Python versions: the manifest keeps the version, each file used
  and a sha256 fingerprint of each token file.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sysconfig
from pathlib import Path

import numpy as np

from ..errors import UserError

SKIPPED = {"test", "tests", "idle_test", "site-packages", "dist-packages", "encodings", "pydoc_data",
           "__pycache__"}


def path_hash(rel: str) -> int:
    """The first 8 bytes of sha256 of a relative path, as an integer: the split and the order."""
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")


def stdlib_files(root: str | Path | None = None) -> list[str]:
    """Relative POSIX paths of the library's `*.py` files (see the module docstring), sorted."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                  if p.is_file() and not SKIPPED & set(p.relative_to(root).parts[:-1]))


def split_files(files: list[str], val_every: int = 10) -> dict[str, list[str]]:
    """{'train': [...], 'val': [...]}: each file in one split by its path's hash, in hash order."""
    ordered = sorted(files, key=lambda rel: (path_hash(rel), rel))
    return {"train": [f for f in ordered if path_hash(f) % val_every],
            "val": [f for f in ordered if path_hash(f) % val_every == 0]}


def stdlib_corpus(out_dir: str | Path, *, train_bytes: int = 1_000_000, val_bytes: int = 100_000,
                  val_every: int = 10, root: str | Path | None = None) -> dict:
    """Write `stdlib_train.bin`, `stdlib_val.bin` and `stdlib_manifest.json` into `out_dir`;
    returns the manifest: Python version, the stdlib folder, per split its files (with the bytes
    used of each), its size and the sha256 of its token file; `fingerprint` covers both files."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"python": platform.python_version(), "stdlib": str(root), "val_every": val_every,
                "vocab_size": 256, "splits": {}}
    digest = hashlib.sha256()
    for split, files in split_files(stdlib_files(root), val_every).items():
        cap = train_bytes if split == "train" else val_bytes
        data, used = bytearray(), []
        for rel in files:
            if len(data) >= cap:
                break
            text = (root / rel).read_bytes()[: cap - len(data)]
            data += text
            used.append([rel, len(text)])
        if len(data) < cap:
            raise UserError(f"the standard library in {root} has only {len(data)} bytes of {split} files, "
                            f"fewer than the {cap} asked for: choose a smaller size")
        path = out / f"stdlib_{split}.bin"
        np.frombuffer(bytes(data), dtype=np.uint8).astype(np.uint16).tofile(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(sha.encode())
        manifest["splits"][split] = {"file": str(path), "bytes": len(data), "n_files": len(used), "sha256": sha,
                                     "files": used}
    manifest["fingerprint"] = digest.hexdigest()[:16]
    (out / "stdlib_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def decode(path: str | Path) -> bytes:
    """The bytes a byte-level token file holds (ids 0..255)."""
    ids = np.fromfile(path, dtype=np.uint16)
    if ids.size and ids.max() > 255:
        raise ValueError(f"{path}: ids above 255 are not bytes")
    return ids.astype(np.uint8).tobytes()
