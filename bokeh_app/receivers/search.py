"""Phrase search: the occurrences of a typed phrase, each in context; a click moves the window there."""

from __future__ import annotations

import html

from bokeh_app import columns
from bokeh_app.worker import failure
from gpu_matcher import ProjectError
from gpu_matcher.genome import motif


def find(engine, phrase: str, limit: int, strands: str = "both") -> tuple[list[str], int, list[int], list[str]]:
    """(tokens, number of hits, the first ``limit`` hits, each hit in context): plain data, any thread.
    A genome project's phrase is a motif (IUPAC, ``strands`` "both" or "+"; ``find_motif``)."""
    if engine.project.genome is not None:
        return find_motif(engine.project, phrase, limit, strands)
    tokens = engine.tokenize(phrase)
    hits = engine.search(phrase)
    shown = [int(h) for h in hits[:limit]]
    n = max(1, len(tokens))
    tok = engine.project.tokens
    contexts = [f"{' '.join(tok(h - 2, h))} [{' '.join(tok(h, h + n))}] {' '.join(tok(h + n, h + n + 3))}".strip()
                for h in shown]
    return tokens, len(hits), shown, contexts


def find_motif(project, pattern: str, limit: int, strands: str) -> tuple[list[str], int, list[int], list[str]]:
    """A motif's hits (``gpu_matcher.genome.motif.find``), each in context: ``acg[TGCA]ca -`` (the strand)."""
    hits = motif.find(project, pattern, strands=strands)
    starts, marks = hits.starts[:limit].tolist(), hits.strands[:limit].tolist()
    n, tok = hits.length, project.tokens
    contexts = [f"{''.join(tok(h - 4, h)).lower()}[{''.join(tok(h, h + n))}]{''.join(tok(h + n, h + n + 4)).lower()} "
                f"{mark}" for h, mark in zip(starts, marks)]
    return [pattern.strip().upper()], len(hits), starts, contexts


#: Longest phrase searched (characters): a client may send a value of any length.
MAX_PHRASE = 500


class SearchReceiver:
    def __init__(self, session):
        self.s = session
        self.hits: list[int] = []
        self.length = 1                    # tokens in the searched phrase

    def connect(self) -> None:
        sv = self.s.sv
        sv.search.on_change("value", lambda attr, old, new: self.on_search(new))
        sv.search_hits.selected.on_change("indices", lambda attr, old, new: self.on_pick(new))

    def on_search(self, phrase: str) -> None:
        s, sv = self.s, self.s.sv
        phrase = (phrase or "").strip()
        if not phrase:
            s.worker.renew("search")                 # an answer still on its way is dropped
            sv.search_hits.data = columns.search_columns([], [])
            sv.search_info.text = ""
            return
        s.user_acted()
        if len(phrase) > MAX_PHRASE:
            s.refuse(f"phrase of {len(phrase):,} characters: search at most {MAX_PHRASE}; not searched")
            return
        engine, limit = s.engine, s.defaults.search_max_results
        sv.search_info.text = html.escape(f"Searching for “{phrase[:80]}”…")
        # In the worker: the words may still be loading, or a source's layout building, for this project.
        strands = "both" if s.ov.strands is None or 0 in s.ov.strands.active else "+"
        s.worker.submit("search", lambda: find(engine, phrase, limit, strands), lambda found: self.show(phrase, found))

    def show(self, phrase: str, found) -> None:
        s, sv = self.s, self.s.sv
        if isinstance(found, ProjectError):
            sv.search_info.text = ""
            s.say(str(found), "warn")
            return
        if isinstance(found, Exception):
            sv.search_info.text = ""
            s.say(failure("Search", found), "error")
            return
        tokens, total, shown, contexts = found
        limit = s.defaults.search_max_results
        phrase_text = " ".join(tokens)
        with s.batch():
            self.hits = shown
            self.length = max(1, len(tokens) if s.locator.genome is None else len(tokens[0]))
            sv.search_hits.selected.indices = []
            sv.search_hits.data = columns.search_columns(
                shown if s.locator.genome is None else [s.locator.where(h) for h in shown], contexts)
            more = f" (first {limit} listed)" if total > limit else ""
            # A Div's text is HTML: the phrase is the user's (or a crafted link's), so it is escaped.
            sv.search_info.text = html.escape(f"{total:,} occurrence(s) of “{phrase_text}”{more}")
            if total:
                s.say(f"{total:,} occurrence(s) of “{phrase_text}”; click one to go there.")
            else:
                s.say(f"“{phrase}” does not occur in this project.", "warn")

    def on_pick(self, indices: list[int]) -> None:
        if self.s.quiet or not indices or not 0 <= indices[0] < len(self.hits):
            return
        i = indices[0]
        hit = self.hits[i]
        self.s.go(hit - self.s.window // 4, focus=(hit, hit + self.length - 1),
                  message=f"Occurrence {i + 1} at {self.s.locator.where(hit)}.")
