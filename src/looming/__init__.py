"""looming: a library operating system for Python.

Applications are written against the device interfaces in
:mod:`looming.devices`; ``looming configure`` links them to the
implementations one deployment needs.
"""

__version__ = "0.1.0"
