"""Where a report may go: every report folder holds a marker file (`MARKER`), and an existing folder at the target is
replaced only if it holds that marker (a report written before) or is empty. Anything else (a user's folder or file,
a symbolic link) is refused with a ConfigError, unless `force`; a link is then replaced itself, never followed, and
the working and home folders are never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from mgm_studies.configbase import ConfigError

MARKER = ".mgm-studies-report"  # in every report folder written here: JSON {tool, study, sweep_run_id, version}
TOOL = "mgm-studies report"


def marker_text(study: str, sweep_run_id: str) -> str:
    """The marker file's content: JSON naming this tool, the study and the sweep the report was built from."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("mgm-studies")
    except PackageNotFoundError:
        tool_version = "unknown"
    content = {"tool": TOOL, "study": study, "sweep_run_id": sweep_run_id, "version": tool_version}
    return json.dumps(content, indent=2) + "\n"


def report_target(out: Path) -> Path:
    """`out` made absolute with its folder resolved, but its last component not followed (a link stays a link)."""
    out = Path(out).expanduser()
    if out.name in ("", ".", ".."):
        return out.resolve()
    return out.parent.resolve() / out.name


def is_report(folder: Path) -> bool:
    """Whether `folder` is a real folder (not a link) holding this tool's marker file."""
    marker = folder / MARKER
    if folder.is_symlink() or not folder.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        content = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(content, dict) and content.get("tool") == TOOL


def check_target(out: Path, force: bool, field: str) -> None:
    """Raise a ConfigError on `field` unless the report may be placed at `out` (absolute, from `report_target`)."""
    if out.is_symlink():
        if not force:
            raise ConfigError.single(
                field,
                f"{out} is a symbolic link (to {os.readlink(out)}): pass --force to replace the link itself (what "
                "it points to is left alone), or choose another folder",
            )
        return
    for keep, what in ((Path.cwd().resolve(), "the working folder"), (Path.home().resolve(), "your home folder")):
        if out == keep or out in keep.parents:
            raise ConfigError.single(field, f"{out} is or holds {what}: a report never replaces it, even with --force")
    if force or not out.exists() or is_report(out):
        return
    if not out.is_dir():
        raise ConfigError.single(field, f"{out} exists and is not a folder: pass --force to replace it")
    if any(out.iterdir()):
        raise ConfigError.single(
            field,
            f"{out} is a folder this tool did not write (it holds no {MARKER} file): pass --force to replace it, or "
            "choose another folder",
        )


def place(staged: Path, out: Path, force: bool, field: str = "--out") -> None:
    """Rename the finished report folder `staged` to `out` (the same file system), replacing what is there only as
    `check_target` allows (checked again: the report took a while to build). A link at `out` is moved aside and
    deleted itself; nothing is ever deleted through it."""
    check_target(out, force, field)
    if not os.path.lexists(out):
        staged.rename(out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))  # ours: never a user's folder
    old = trash / "old"
    out.rename(old)  # renames a link itself, never its target
    try:
        staged.rename(out)
    except BaseException:
        old.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)  # rmtree unlinks the links it meets, never follows them
