"""Helpers of the document-level tests of issue 15's views: a page on a bare Document, models by name,
the status line and the URL the page shows."""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from bokeh.document import Document

from bokeh_app.app import build_document


def open_doc(catalogue, **query):
    doc = Document()
    session = build_document(doc, catalogue, {k: [str(v).encode()] for k, v in query.items()})
    return doc, session


def model(doc, name):
    found = doc.get_model_by_name(name)
    assert found is not None, f"no model named {name!r}"
    return found


def status(doc) -> str:
    return html.unescape(model(doc, "status").text)


def url_of(doc) -> dict[str, str]:
    query = model(doc, "url_state").data["query"][0]
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
