"""gpu_matcher: LSTMVis projects in, exact select/match answers out (NumPy or CuPy backend)."""

from gpu_matcher.errors import ProjectError
from gpu_matcher.project import Project, discover_projects, open_project
from gpu_matcher.threshold import Threshold
from gpu_matcher.engine import Engine, Match, Selection, Context

__all__ = [
    "ProjectError", "Project", "discover_projects", "open_project",
    "Engine", "Match", "Selection", "Context", "Threshold",
]
