"""The tables wing's messages name parameters (``samples must be at least 1``), never a command's flags.

A message is written with each parameter it names between backticks (```eta`=0.5: applies to `method`
ddim only``): as a string it reads in the Python API's words (``eta=0.5: applies to method ddim only``),
and it keeps the marked text (``.marked``) so that a command can write each parameter as its own flag
(``cli/impute.py``: ``--eta 0.5: applies to --method ddim only``). The shared option checks
(``constraints.py``) speak in flags: :func:`parameter_words` marks their parameters.

Standard library only.
"""
from __future__ import annotations

import re

_MARKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`(=?)")
_FLAG = re.compile(r"--([a-zA-Z][a-zA-Z-]*)(?: ((?:'[^']*'|[-0-9.]+)))?")


class Message(str):
    """A message in parameter words; ``marked``: the same text with each parameter between backticks."""

    marked: str

    def __new__(cls, marked: str) -> "Message":
        text = super().__new__(cls, _MARKED.sub(lambda m: m.group(1) + m.group(2), marked))
        text.marked = marked
        return text

    def words(self, name_of) -> str:
        """The message with each marked parameter written as ``name_of(parameter)`` (a flag: ``--eta``); a
        parameter given with its value (``eta=0.5``) becomes ``--eta 0.5``."""
        return _MARKED.sub(lambda m: name_of(m.group(1)) + (" " if m.group(2) else ""), self.marked)


class TableError(ValueError):
    """Bad input: the message is one line naming the file and the fix (a :class:`Message` where it names a
    parameter)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def words(self, name_of) -> str:
        """The message with its parameters written as ``name_of`` names them (see :meth:`Message.words`)."""
        return self.message.words(name_of) if isinstance(self.message, Message) else str(self.message)


def said(marked: str) -> Message:
    """A message written with its parameters between backticks (see the module's note)."""
    return Message(marked)


def parameter_words(message: str) -> Message:
    """A message in flags as a :class:`Message`: ``--train-steps`` is the parameter ``train_steps``, ``--eta 2``
    is ``eta=2`` (a value that is a number or quoted)."""
    if isinstance(message, Message):
        return message

    def mark(m: re.Match) -> str:
        word = m.group(1).replace("-", "_")
        return f"`{word}`={m.group(2)}" if m.group(2) else f"`{word}`"

    return Message(_FLAG.sub(mark, str(message)))
