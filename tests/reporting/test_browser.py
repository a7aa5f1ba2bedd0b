"""The headless-Chromium harness passes a good page and catches each kind of fault a report could have."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from browser import open_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _page(directory: Path, body: str) -> Path:
    """An index.html in `directory` with a real 40x30 PNG at figures/plot.png beside it."""
    (directory / "figures").mkdir(exist_ok=True)
    pixels = np.linspace(0.0, 1.0, 30 * 40 * 3).reshape(30, 40, 3)
    matplotlib.image.imsave(directory / "figures" / "plot.png", pixels)
    index = directory / "index.html"
    index.write_text(f"<!doctype html>\n<html><head><title>report</title></head><body>{body}</body></html>\n")
    return index


def test_good_page_passes_and_is_screenshot(tmp_path: Path) -> None:
    # The second image sits far below the first screen with loading="lazy": it must still be fetched and checked.
    index = _page(
        tmp_path,
        '<h1>Study</h1><img src="figures/plot.png" alt="plot">'
        '<div style="height: 3000px"></div><img loading="lazy" src="figures/plot.png" alt="lazy plot">',
    )
    shot = tmp_path / "shots" / "page.png"
    result = open_page(index, screenshot=shot, script="Array.from(document.images, i => i.naturalWidth)")
    assert result.console_errors == []
    assert result.remote_requests == []
    plot_url = (tmp_path / "figures" / "plot.png").as_uri()
    assert result.images == [(plot_url, True), (plot_url, True)]
    assert result.value == [40, 40]
    assert result.screenshot == shot
    width, height = _png_size(shot)
    assert width == 1280
    assert height > 3000  # the whole page, not only the first screen


def test_missing_image_is_reported(tmp_path: Path) -> None:
    index = _page(tmp_path, '<img src="figures/plot.png"><img src="figures/missing.png">')
    result = open_page(index)
    assert result.images == [
        ((tmp_path / "figures" / "plot.png").as_uri(), True),
        ((tmp_path / "figures" / "missing.png").as_uri(), False),
    ]
    assert any("missing.png" in error and "ERR_FILE_NOT_FOUND" in error for error in result.console_errors)
    assert result.screenshot is None


def test_console_error_is_captured(tmp_path: Path) -> None:
    index = _page(tmp_path, '<script>console.log("fine"); console.error("x", 3)</script>')
    assert open_page(index).console_errors == ["console.error: x 3"]


def test_exception_is_captured(tmp_path: Path) -> None:
    index = _page(tmp_path, '<script>throw new TypeError("figure list is empty")</script>')
    (error,) = open_page(index).console_errors
    assert error.startswith("exception: TypeError: figure list is empty")


def test_script_value_is_returned(tmp_path: Path) -> None:
    rows = "".join(f"<tr><td>{i}</td></tr>" for i in range(7))
    index = _page(tmp_path, f"<table><thead><tr><th>n</th></tr></thead><tbody>{rows}</tbody></table>")
    assert open_page(index, script="document.querySelectorAll('tr').length").value == 8


def test_remote_request_is_recorded(tmp_path: Path) -> None:
    index = _page(tmp_path, '<img src="figures/plot.png"><img src="http://example.invalid/x.png">')
    result = open_page(index)
    assert result.remote_requests == ["http://example.invalid/x.png"]
    assert result.images[1] == ("http://example.invalid/x.png", False)
    assert result.console_errors == ["network: blocked (inspector) http://example.invalid/x.png"]


def test_hung_page_times_out_and_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(profiles))
    index = _page(tmp_path, "<script>while (true) {}</script>")
    with pytest.raises(TimeoutError, match="waiting for"):
        open_page(index, timeout=5)
    assert list(profiles.iterdir()) == []  # the temporary profile is gone
    still_running = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(profiles).encode() in cmdline.read_bytes():
                still_running.append(cmdline.parent.name)
        except OSError:  # the process ended while we looked
            pass
    assert still_running == []
