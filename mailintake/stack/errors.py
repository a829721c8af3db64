"""The one exception type the stack raises for problems a person must act on."""

from __future__ import annotations


class StackError(RuntimeError):
    """A stack operation failed; the message says which component and what to do.

    ``log_tail`` holds the last lines of the failing component's log, when
    there is one, and is appended to ``str(error)``.
    """

    def __init__(self, message: str, component: str | None = None, log_tail: str | None = None):
        self.message = message
        self.component = component
        self.log_tail = log_tail
        super().__init__(message)

    def __str__(self) -> str:
        if not self.log_tail:
            return self.message
        label = f"{self.component} log" if self.component else "log"
        return f"{self.message}\n--- last lines of the {label} ---\n{self.log_tail.rstrip()}"
