"""File operations on the folders Spark writes, on any file system pyarrow reaches (local,
HDFS, S3, GCS, ...), by URI or path: the driver needs no private Spark API for them."""

from __future__ import annotations

import os

from pyarrow import fs


def resolve(uri: str) -> tuple[fs.FileSystem, str]:
    """The file system and the path within it; a plain path is local (relative to the cwd)."""
    if "://" not in uri and not uri.startswith("file:"):
        uri = os.path.abspath(uri)
    return fs.FileSystem.from_uri(uri)


def remove_tree(uri: str, attempts: int = 5) -> None:
    """Remove a folder and everything in it; nothing when it is not there.

    Another remover may work in the same folder at once (Spark's cleaner deletes checkpoint
    files the job no longer refers to): a file it took away mid-walk is not an error, the
    walk starts again on what is left."""
    filesystem, path = resolve(uri)
    for attempt in range(attempts):
        if filesystem.get_file_info(path).type != fs.FileType.Directory:
            return
        try:
            filesystem.delete_dir(path)
            return
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise


def stable_part_names(root: str, suffix: str) -> None:
    """Rename Spark's part files (named with a random id) to part-00000<suffix>, ... in each
    folder under ``root``, in the order of their names."""
    filesystem, base = resolve(root)
    parts: dict[str, list[str]] = {}
    for info in filesystem.get_file_info(fs.FileSelector(base, recursive=True)):
        if info.type == fs.FileType.File and info.base_name.startswith("part-"):
            parts.setdefault(info.path.rsplit("/", 1)[0], []).append(info.path)
    for folder, paths in parts.items():
        for i, path in enumerate(sorted(paths, key=lambda p: p.rsplit("/", 1)[1])):
            target = f"{folder}/part-{i:05d}{suffix}"
            if path != target:
                filesystem.move(path, target)
