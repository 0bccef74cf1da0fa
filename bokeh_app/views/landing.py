"""The landing view: every discovered project (name, description, sources with sizes); a link opens one."""

from __future__ import annotations

import html
from dataclasses import dataclass
from urllib.parse import urlencode

from bokeh.models import Column, Div

from bokeh_app.views.common import PAGE_CSS, header, status_div


@dataclass
class LandingView:
    layout: Column
    table: Div
    status: Div


def _project_row(summary: dict) -> str:
    pid = html.escape(summary["id"])
    link = f'<a href="?{html.escape(urlencode({"project": summary["id"]}))}">{pid}</a>'
    if "error" in summary:
        return f'<tr><td>{link}</td><td colspan="3" style="color:#b00">{html.escape(summary["error"])}</td></tr>'
    sources = "<br>".join(
        f"{html.escape(name)} &nbsp; <span class='lv-sub'>{s['shape'][0]:,} × {s['shape'][1]} · "
        f"{html.escape(s['dtype'])} · {html.escape(s['transform'])}</span>"
        for name, s in summary["sources"].items())
    meta = ", ".join(f"{html.escape(n)} ({html.escape(k)})" for n, k in summary["meta"].items()) or "—"
    return (f"<tr><td>{link}</td><td><b>{html.escape(summary['name'])}</b><br>"
            f"<span class='lv-sub'>{html.escape(summary['description'])}</span><br>"
            f"<span class='lv-sub'>{summary['T']:,} steps · {summary['sequences']:,} sequences</span></td>"
            f"<td>{sources}</td><td>{meta}</td></tr>")


def table_html(summaries: list[dict], pending: int = 0) -> str:
    """The project table; ``pending`` projects still being read are counted in a last row."""
    rows = "".join(_project_row(s) for s in summaries)
    if pending:
        rows += f'<tr><td colspan="4" class="lv-busy">⏳ reading {pending:,} more project(s)…</td></tr>'
    rows = rows or '<tr><td colspan="4">No projects (no lstm.yml below the data folder).</td></tr>'
    return ('<table class="lv-projects"><tr><th>project</th><th>name</th><th>sources (steps × cells)</th>'
            f"<th>meta tracks</th></tr>{rows}</table>")


def build_landing(summaries: list[dict], data_dir_label: str, pending: int = 0) -> LandingView:
    table = Div(name="project_list", stylesheets=[PAGE_CSS], text=table_html(summaries, pending))
    status = status_div()
    layout = Column(header("projects", f"{len(summaries)} found in {data_dir_label}", False), status,
                    table, name="landing", stylesheets=[PAGE_CSS])
    return LandingView(layout=layout, table=table, status=status)
