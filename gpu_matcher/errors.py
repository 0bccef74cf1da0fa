"""The one exception type for problems a user can cause (bad projects, bad queries)."""


class ProjectError(Exception):
    """A user-facing error; its message names the file, key or value at fault, in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
