"""The session's receivers: each wires a few widgets of one view to a handful of short callbacks that
ask the engine (``bokeh_app.queries``) and write columns (``bokeh_app.columns``)."""

from bokeh_app.receivers.match import MatchReceiver
from bokeh_app.receivers.search import SearchReceiver
from bokeh_app.receivers.select import SelectReceiver
from bokeh_app.receivers.stats import StatsReceiver
from bokeh_app.receivers.unit import UnitReceiver
from bokeh_app.receivers.window import WindowReceiver

__all__ = ["MatchReceiver", "SearchReceiver", "SelectReceiver", "StatsReceiver", "UnitReceiver", "WindowReceiver"]
