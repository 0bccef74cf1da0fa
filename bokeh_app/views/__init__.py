"""Model construction for each view; every function returns a dataclass of named handles."""
