"""The media of a release: its archives downloaded from a Hub dataset repo (`fetch_media`) and each extracted once into
a media root (`extract_media_archive`), members that would land outside the root or are links refused.

Example:
    >>> from videorft_hf.media_download import fetch_media
    >>> root = fetch_media("QiWang98/VideoRFT-Data", "/data/videorft", allow_patterns=["*CLEVRER*"])  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import json
import logging
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from .schema import MediaPathError, has_parent_part, is_absolute_path

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz")
DEFAULT_MEDIA_PATTERNS: tuple[str, ...] = tuple(f"*{suffix}" for suffix in ARCHIVE_SUFFIXES)
EXTRACTED_MARKER_DIR = ".videorft_extracted"


def _marker_path(media_root: str, archive_name: str) -> str:
    return os.path.join(media_root, EXTRACTED_MARKER_DIR, archive_name.replace("/", "__") + ".done")


def _extracted_archives(media_root: str) -> set[str]:
    folder = os.path.join(media_root, EXTRACTED_MARKER_DIR)
    if not os.path.isdir(folder):
        return set()
    names = set()
    for entry in os.listdir(folder):
        if entry.endswith(".done"):
            with open(os.path.join(folder, entry), encoding="utf-8") as stream:
                names.add(json.load(stream)["archive"])
    return names


def _member_problem(name: str) -> str | None:
    if is_absolute_path(name):
        return f"member {name!r} has an absolute path"
    if has_parent_part(name):
        return f"member {name!r} contains '..' and would be written outside the media root"
    return None


def extract_media_archive(
    archive: str | os.PathLike, media_root: str | os.PathLike, *, name: str | None = None
) -> bool:
    """Extracts a `.zip` / `.tar` / `.tar.gz` / `.tgz` media archive into `media_root` once.

    A marker file under `<media_root>/.videorft_extracted/` is written after a complete extraction, so a re-run skips
    the archive and an interrupted one extracts it again. Members with absolute paths, `..` parts, or links
    (symlinks, hard links) are refused before anything of theirs is written: media archives need only files and folders.

    Args:
        archive: the archive file.
        media_root: the folder to extract into (created if missing).
        name: the archive's name in the marker (defaults to the file name; `fetch_media` uses the repo path).

    Returns:
        True if the archive was extracted, False if its marker says it already was.

    Raises:
        MediaPathError: a member would land outside the root or is a link.
        ValueError: the file is not a supported archive.

    Example:
        >>> extract_media_archive("LLaVA-Video-178K.zip", "/data/videorft")  # doctest: +SKIP
        True
    """
    archive, root = os.fspath(archive), os.path.abspath(os.fspath(media_root))
    name = name or os.path.basename(archive)
    marker = _marker_path(root, name)
    if os.path.exists(marker):
        logger.info("Skipping %s: already extracted into %s (marker %s).", name, root, marker)
        return False
    os.makedirs(root, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            for info in members:
                problem = _member_problem(info.filename)
                if problem is None and stat.S_ISLNK(info.external_attr >> 16):
                    problem = f"member {info.filename!r} is a symlink"
                if problem is not None:
                    raise MediaPathError(f"{problem}; archive refused, nothing extracted", None, None, archive)
            zipped.extractall(root)
            count = len(members)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            count = 0

            def check(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
                nonlocal count
                problem = _member_problem(member.name)
                if problem is None and (member.issym() or member.islnk()):
                    problem = f"member {member.name!r} is a link"
                if problem is not None:
                    raise MediaPathError(f"{problem}; archive refused, extraction stopped", None, None, archive)
                count += 1
                try:
                    return tarfile.data_filter(member, destination)
                except tarfile.FilterError as error:  # device files and the like: not media
                    raise MediaPathError(
                        f"{error}; archive refused, extraction stopped", None, None, archive
                    ) from None

            tarred.extractall(root, filter=check)
    else:
        raise ValueError(f"{archive!r} is not a zip or tar archive; media archives must be one of {ARCHIVE_SUFFIXES}")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker + ".tmp", "w", encoding="utf-8") as stream:
        json.dump({"archive": name, "size": os.path.getsize(archive), "members": count}, stream)
    os.replace(marker + ".tmp", marker)
    return True


def _snapshot_download(**kwargs: Any) -> str:
    from huggingface_hub import snapshot_download  # deferred: importing the data API must not need the Hub

    return snapshot_download(**kwargs)


def fetch_media(
    repo_id: str,
    media_root: str | os.PathLike,
    allow_patterns: str | Iterable[str] | None = None,
    *,
    revision: str | None = None,
    download_dir: str | os.PathLike | None = None,
    delete_archives: bool = False,
    token: str | bool | None = None,
) -> str:
    """Downloads a dataset repo's media archives and extracts each one into `media_root` once.

    The download is `huggingface_hub.snapshot_download` (resumable: an interrupted run continues where it stopped);
    archives already extracted (per their markers, see `extract_media_archive`) are not downloaded again, even after
    `delete_archives` removed them. The media of the full release is about 310 GB: pick archives with
    `allow_patterns`.

    Args:
        repo_id: dataset repo, such as `"QiWang98/VideoRFT-Data"`.
        media_root: folder to extract into; pass the same folder to `load_videorft_dataset(media_root=...)`.
        allow_patterns: glob patterns of the repo files to fetch (default: every zip / tar archive).
        revision: repo revision.
        download_dir: where archives are downloaded (default `<media_root>/.downloads`).
        delete_archives: delete each archive once extracted, to save disk space.
        token: Hub token, as for `snapshot_download`.

    Returns:
        The absolute media root.

    Example:
        >>> root = fetch_media("QiWang98/VideoRFT-Data", "/data/videorft", allow_patterns=["*CLEVRER*"])  # doctest: +SKIP
    """
    root = os.path.abspath(os.fspath(media_root))
    os.makedirs(root, exist_ok=True)
    local_dir = (
        os.path.abspath(os.fspath(download_dir)) if download_dir is not None else os.path.join(root, ".downloads")
    )
    if isinstance(allow_patterns, str):
        allow_patterns = [allow_patterns]
    done = _extracted_archives(root)
    snapshot = _snapshot_download(
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=list(allow_patterns or DEFAULT_MEDIA_PATTERNS),
        ignore_patterns=[glob.escape(name) for name in sorted(done)] or None,
        local_dir=local_dir,
        token=token,
    )
    archives = []
    for folder, subfolders, files in os.walk(snapshot):
        subfolders[:] = sorted(sub for sub in subfolders if sub != ".cache")  # huggingface_hub's download metadata
        archives.extend(os.path.join(folder, file) for file in sorted(files) if file.endswith(ARCHIVE_SUFFIXES))
    for archive in tqdm(archives, desc="Extracting media archives", unit="archive"):
        name = os.path.relpath(archive, snapshot).replace(os.sep, "/")
        if name in done:
            continue
        extract_media_archive(archive, root, name=name)
        if delete_archives:
            os.remove(archive)
    return root
