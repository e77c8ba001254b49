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


def describe(exc: BaseException, path=None):
    """(where, problem) of an error, for one line of output: the file it names (else ``path``) and the problem
    with whitespace folded; other exceptions are described by their type and message."""
    if isinstance(exc, InputError):
        where, problem = exc.path or (None if path is None else str(path)), exc.problem
    else:
        where, problem = None if path is None else str(path), f"{exc.__class__.__name__}: {exc}"
    return where, " ".join(str(problem).split())
