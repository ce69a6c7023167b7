"""`cached_property` without a lock.

Python 3.11's `functools.cached_property` holds a `threading.RLock` per attribute, which cannot
be pickled; the package's classes travel by value to an NDIF server with every remote request
(`peap_widget.runtime.remote`), so their cached attributes use this instead. Computing a value twice
in a race is harmless here: every cached attribute is a pure function of the object.
"""

from __future__ import annotations


class cached_property:  # noqa: N801 (a drop-in for functools.cached_property)
    """Compute the attribute on first access and keep it in the instance's ``__dict__``."""

    def __init__(self, func):
        self.func = func
        self.attrname = None
        self.__doc__ = func.__doc__

    def __set_name__(self, owner, name):
        self.attrname = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.attrname] = value
        return value
