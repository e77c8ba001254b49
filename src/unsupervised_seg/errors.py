"""Exception types for bad input. Faces turn them into one line and a non-zero exit."""


class InputError(ValueError):
    """Bad input data or parameters: the message names the file (when known) and the problem."""

    def __init__(self, problem: str, path=None):
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def with_path(self, path) -> "InputError":
        """The same problem, attributed to ``path`` (used when a face knows the file)."""
        return InputError(self.problem, path)
