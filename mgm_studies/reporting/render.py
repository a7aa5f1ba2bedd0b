"""One report, two renderings: a list of blocks (headings, paragraphs, tables, figures) written as Markdown
(`report.md`) and as a self-contained HTML page (`index.html`: inline CSS, images from `figures/` beside it, no script
and no network fetch).

A table cell is text, or a `Link(text, url)`; paragraphs may hold links too (a list of str and Link).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class Code:
    """A command or a path, shown verbatim."""

    text: str


Inline = Union[str, Link, Code, list]  # noqa: UP007 (a recursive alias)


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    content: Inline


@dataclass(frozen=True)
class Bullets:
    items: list[Inline]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[Inline]]
    caption: str | None = None
    css_class: str = ""


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the report folder: figures/NAME.png
    caption: str
    width: int | None = None  # CSS pixels, for small images side by side


@dataclass(frozen=True)
class FigureRow:
    figures: list[Figure]


Block = Heading | Paragraph | Bullets | Table | Figure | FigureRow


# ---------------------------------------------------------------------- Markdown
def _md_inline(content: Inline) -> str:
    if isinstance(content, Link):
        return f"[{content.text}]({content.url})"
    if isinstance(content, Code):
        return f"`{content.text}`"
    if isinstance(content, list):
        return "".join(_md_inline(c) for c in content)
    return str(content).replace("|", "\\|")


def to_markdown(title: str, blocks: list[Block]) -> str:
    out = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [_md_inline(block.content), ""]
        elif isinstance(block, Bullets):
            out += [f"- {_md_inline(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"*{block.caption}*", ""]
            out.append("| " + " | ".join(block.headers) + " |")
            out.append("|" + "|".join("---" for _ in block.headers) + "|")
            out += ["| " + " | ".join(_md_inline(c) for c in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Figure):
            out += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
        elif isinstance(block, FigureRow):
            out += [" ".join(f"![{f.caption}]({f.path})" for f in block.figures), ""]
            out += ["*" + " · ".join(f.caption for f in block.figures) + "*", ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 70rem;
       padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .9rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.row { display: flex; flex-wrap: wrap; gap: 1rem; } .row figure { margin: 0; }
a { color: #0b61a4; } code { font-size: .85em; background: #f3f3f3; padding: 0 .2em; }
"""


_NUM = ' class="num"'


def _html_inline(content: Inline) -> str:
    if isinstance(content, Link):
        return f'<a href="{html.escape(content.url, quote=True)}">{html.escape(content.text)}</a>'
    if isinstance(content, Code):
        return f"<code>{html.escape(content.text)}</code>"
    if isinstance(content, list):
        return "".join(_html_inline(c) for c in content)
    return html.escape(str(content))


def _numeric(text: Inline) -> bool:
    if not isinstance(text, str) or not text:
        return False
    head = text.split(" ", 1)[0].replace("−", "-")
    try:
        float(head)
    except ValueError:
        return False
    return True


def _figure(figure: Figure) -> str:
    width = f' width="{figure.width}"' if figure.width else ""
    return (
        f'<figure><img src="{html.escape(figure.path, quote=True)}" alt="{html.escape(figure.caption, quote=True)}"'
        f"{width}><figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def to_html(title: str, blocks: list[Block]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_html_inline(block.content)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            css = f' class="{block.css_class}"' if block.css_class else ""
            rows = ["<table" + css + ">"]
            if block.caption:
                rows.append(f"<caption>{html.escape(block.caption)}</caption>")
            rows.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.headers) + "</tr></thead>")
            rows.append("<tbody>")
            for row in block.rows:
                cells = "".join(f"<td{_NUM if _numeric(c) else ''}>{_html_inline(c)}</td>" for c in row)
                rows.append(f"<tr>{cells}</tr>")
            rows.append("</tbody></table>")
            body.append("".join(rows))
        elif isinstance(block, Figure):
            body.append(_figure(block))
        elif isinstance(block, FigureRow):
            body.append('<div class="row">' + "".join(_figure(f) for f in block.figures) + "</div>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
