"""Errors a user can act on: the message names the file, the line and the problem."""

from __future__ import annotations

#: How a user gives the input length of a model whose length is not fixed, in the shell and in Python (one
#: wording for every place that needs it).
SEQ_LEN_HINT = "pass --seq-len N (Python: seq_len=N)"


class InputError(ValueError):
    """Bad user input (file, model, argument). The CLI prints the message and exits with status 2."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class UnsupportedModelError(InputError):
    """A model type, layer or op the backend cannot handle (named in the message)."""
