"""The user-error taxonomy and the one option checker.

A *user error* is a problem with what the user gave (a file, a config value, a checkpoint): the command lines
print it as ``error: <message>`` and exit with code 1, without a traceback. Every other exception is a bug and
keeps its traceback. The messages name the file or option and say how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class ImageReadError(ValueError):
    """A NIfTI file exists but cannot be read (corrupt, truncated, not NIfTI, implausible header)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable, from another version, or not written by seg."""


# What the command lines report as "error: ..." (exit 1). NotADirectoryError and IsADirectoryError are the
# OSErrors of a path given where a folder (or a file) was expected.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                 IsADirectoryError, FloatingPointError, KeyError)


def check_option(name: str, value: T, allowed: Sequence[T]) -> T:
    """Return ``value`` if it is one of ``allowed``, else raise ``ValueError`` with a did-you-mean hint.

    The one option checker of ``seg`` (MONAI's ``look_up_option`` plays this part there):

    >>> check_option("blend", "gaussian", ("gaussian", "constant"))
    'gaussian'
    >>> check_option("blend", "gausian", ("gaussian", "constant"))
    Traceback (most recent call last):
    ...
    ValueError: unknown blend 'gausian'; expected one of ('gaussian', 'constant') (did you mean 'gaussian'?)
    """
    if value in allowed:
        return value
    hint = difflib.get_close_matches(str(value), [str(a) for a in allowed if a is not None], n=1)
    raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(allowed)}"
                     + (f" (did you mean {hint[0]!r}?)" if hint else ""))
