"""The report's page: content blocks as plain data, and the one template that turns them into HTML.

Sections (:mod:`scalebayes.report.sections`) return a :class:`Section` of blocks (paragraphs, lists, tables,
figures as PNG bytes, boxes); :func:`render_page` writes every block through one page template. Text is escaped when
rendered unless it is :class:`Html` (markup the report wrote itself, with any user text inside escaped by
:func:`h`), so a family label or data name such as ``<script>`` is shown, never run.
"""

from __future__ import annotations

import base64
import html
import io
import math
import string
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Central interval used for every band and table in the report.
LO, MID, HI = 0.05, 0.5, 0.95


class Html(str):
    """Text that is already HTML; any other ``str`` in a block is escaped when rendered. Adding text to it escapes
    the text (``Html("<b>x</b>") + "a<b"`` is ``<b>x</b>a&lt;b``), so markup stays markup and text stays text."""

    def __add__(self, other) -> Html:
        return Html(str.__add__(self, esc(other)))

    def __radd__(self, other) -> Html:
        return Html(str.__add__(esc(other), self))


def esc(text) -> Html:
    """``text`` as HTML: escaped, unless it already is :class:`Html`."""
    return text if isinstance(text, Html) else Html(html.escape(str(text)))


def h(template: str, *args, **kwargs) -> Html:
    """``template`` (trusted HTML written by the report) with ``{}`` fields filled by escaped arguments."""
    return Html(template.format(*map(esc, args), **{k: esc(v) for k, v in kwargs.items()}))


def join(parts: Sequence, sep: str = "") -> Html:
    """Parts joined as HTML, each escaped unless it is :class:`Html`."""
    return Html(sep.join(esc(p) for p in parts))


def fmt(v, digits: int = 3) -> Html:
    """A number to ``digits`` significant figures, exponent without padding (``7.1e10``); text is escaped."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return esc(v)
    if math.isnan(v):
        return Html("–")
    if math.isinf(v):
        return Html("∞" if v > 0 else "−∞")
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        m, e = f"{v:.{digits - 1}e}".split("e")
        return Html(f"{m}e{int(e)}")
    s = f"{v:.{digits}g}"
    if "e" in s:
        m, e = s.split("e")
        s = f"{m}e{int(e)}"
    return Html(s)


def fmt_interval(med: float, lo: float, hi: float, digits: int = 3) -> Html:
    """``median [lo, hi]``, the interval greyed."""
    return Html(f"{fmt(med, digits)} <span class='ci'>[{fmt(lo, digits)}, {fmt(hi, digits)}]</span>")


# ---------------------------------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class Para:
    """A paragraph; ``cls`` ``"note"`` (small, grey) or ``"err"`` (red)."""

    text: str
    cls: str = ""


@dataclass(frozen=True)
class Items:
    """A bulleted list."""

    items: Sequence[str]
    cls: str = ""


@dataclass(frozen=True)
class Table:
    """A table: header cells and rows of cells (text or :class:`Html`)."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    cls: str = ""


@dataclass(frozen=True)
class Figure:
    """A figure as PNG bytes with its alt text and caption; ``error`` replaces it when it could not be drawn."""

    alt: str
    caption: str
    png: bytes = b""
    error: str = ""


@dataclass(frozen=True)
class Row:
    """Figures side by side (they wrap onto more lines on a narrow screen)."""

    figures: Sequence[Figure]


@dataclass(frozen=True)
class Box:
    """Blocks in a coloured box: ``cls`` ``"ok"`` (green), ``"fail"`` (red) or ``"key"`` (the headline, blue)."""

    cls: str
    blocks: Sequence
    head: str = ""


@dataclass(frozen=True)
class Pre:
    """Preformatted text (a command line)."""

    text: str


@dataclass
class Section:
    """One section of the page: its anchor id, heading, navigation label and blocks."""

    id: str
    title: str
    nav: str
    blocks: list = field(default_factory=list)


def figure(make: Callable[[], object], alt: str, caption: str, problems: list[str], *, dpi: int = 100) -> Figure:
    """Draw ``make()`` (a matplotlib Figure) to PNG; a figure that fails becomes a visible note (and a warning, and an
    entry in ``problems``) rather than losing the page."""
    try:
        buf = io.BytesIO()
        make().savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    except Exception as e:  # a figure failing must not lose the rest of the report
        msg = f"figure '{alt}' could not be drawn: {type(e).__name__}: {e}"
        problems.append(msg)
        warnings.warn(msg, stacklevel=2)
        return Figure(alt, caption, error=msg)
    return Figure(alt, caption, png=buf.getvalue())


# ---------------------------------------------------------------------------------------------------- rendering
def _table(b: Table) -> str:
    th = "".join(f"<th>{esc(c)}</th>" for c in b.header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in b.rows)
    return f"<table class='{esc(b.cls)}'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(b: Figure) -> str:
    if b.error:
        return f"<p class='err'>{esc(b.error)}</p>"
    data = base64.b64encode(b.png).decode("ascii")
    img = f"<img class='figure' alt='{esc(b.alt)}' src='data:image/png;base64,{data}'>"
    return f"<figure>{img}<figcaption class='caption'>{esc(b.caption)}</figcaption></figure>"


def render_block(b) -> str:
    """One block as HTML."""
    if isinstance(b, Para):
        return f"<p class='{esc(b.cls)}'>{esc(b.text)}</p>" if b.cls else f"<p>{esc(b.text)}</p>"
    if isinstance(b, Items):
        return f"<ul class='{esc(b.cls)}'>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        return _figure(b)
    if isinstance(b, Row):
        return "<div class='row'>" + "".join(_figure(f) for f in b.figures) + "</div>"
    if isinstance(b, Box):
        head = f"<b class='head'>{esc(b.head)}</b>" if b.head else ""
        return f"<div class='banner {esc(b.cls)}'>{head}" + "".join(render_block(x) for x in b.blocks) + "</div>"
    if isinstance(b, Pre):
        return f"<pre>{esc(b.text)}</pre>"
    raise TypeError(f"not a report block: {type(b).__name__}")


CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;max-width:1120px;margin:24px auto;
 padding:0 20px;color:#222;line-height:1.5}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#555;margin-top:0}
nav{background:#f6f6f6;padding:8px 12px;border-radius:6px;font-size:.92em}nav a{margin-right:14px}
.banner{padding:10px 16px;border-radius:6px;margin:14px 0;font-size:1.0em}.banner p{margin:.4em 0}
.ok{background:#e8f5e9;border:1px solid #81c784}.fail{background:#ffebee;border:2px solid #e53935}
.fail b.head{color:#b71c1c;font-size:1.1em}
.key{background:#f3f6fb;border:1px solid #c5d3ea}
table{border-collapse:collapse;margin:10px 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2}
td .ci{color:#666;font-size:.92em}span.bad{color:#c62828;font-weight:bold}
figure{margin:8px 0}img.figure{max-width:100%;border:1px solid #eee}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.row figure{flex:1 1 480px;min-width:0}
.caption{color:#444;font-size:.93em;margin-top:0}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
pre{background:#f4f4f4;padding:8px;white-space:pre-wrap;word-break:break-all}
.note{color:#555;font-size:.92em}.err{color:#b71c1c}
"""

PAGE = string.Template(
    """<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>
<meta name='viewport' content='width=device-width, initial-scale=1'>
<title>$title</title><style>$css</style></head><body>
<h1>$title</h1>
<p class='sub'>$subtitle</p>
<nav>$nav</nav>
$sections
</body></html>
"""
)
SECTION = string.Template("<section id='$id'><h2>$title</h2>\n$body\n</section>")


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page: title, subtitle, navigation and every section, through :data:`PAGE`."""
    nav = "".join(f"<a href='#{esc(s.id)}'>{esc(s.nav)}</a>" for s in sections)
    body = "\n".join(
        SECTION.substitute(id=esc(s.id), title=esc(s.title), body="\n".join(render_block(b) for b in s.blocks))
        for s in sections
    )
    return PAGE.substitute(title=esc(title), subtitle=esc(subtitle), css=CSS, nav=nav, sections=body)
