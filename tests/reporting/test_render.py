"""The report's two renderings from one list of blocks: Markdown and self-contained HTML."""

from __future__ import annotations

from mgm_studies.reporting.render import (
    Bullets,
    Figure,
    FigureRow,
    Heading,
    Link,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)

BLOCKS = [
    Heading("Summary"),
    Bullets(["a <b> & c", ["see ", Link("run 1", "http://h/#/runs/1?a=1&b=2")]]),
    Table(["value", "mean"], [["x|y", "0.5 ± 0.1 (n=2)"], [Link("r", "http://h/r"), "–"]], caption="cap"),
    Figure("figures/a.png", "a figure"),
    FigureRow([Figure("figures/b.png", "b", width=300), Figure("figures/c.png", "c")]),
    Paragraph("the end"),
]


def test_markdown_escapes_table_pipes_and_writes_links_and_images():
    text = to_markdown("Study s", BLOCKS)
    assert text.startswith("# Study s\n\n## Summary\n")
    assert "- see [run 1](http://h/#/runs/1?a=1&b=2)" in text
    assert "| x\\|y | 0.5 ± 0.1 (n=2) |" in text and "| [r](http://h/r) | – |" in text
    assert "![a figure](figures/a.png)" in text and "![b](figures/b.png) ![c](figures/c.png)" in text


def test_html_escapes_text_links_to_runs_and_fetches_nothing_remote():
    page = to_html("Study <s>", BLOCKS)
    assert "<title>Study &lt;s&gt;</title>" in page and "a &lt;b&gt; &amp; c" in page
    assert '<a href="http://h/#/runs/1?a=1&amp;b=2">run 1</a>' in page
    assert '<td class="num">0.5 ± 0.1 (n=2)</td>' in page and "<td>x|y</td>" in page
    assert '<img src="figures/b.png" alt="b" width="300">' in page
    assert "<script" not in page and "@import" not in page
    sources = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert sources == ["figures/a.png", "figures/b.png", "figures/c.png"]
    assert '<link rel="icon" href="data:,">' in page  # no favicon request either
