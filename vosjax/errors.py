"""The one exception type vosjax raises for bad input.

Errors at the edges (files, CLI flags, configs, array shapes handed to a
public function) raise :class:`VosjaxError` with a message that names the file,
field or argument at fault and says what to do about it. It subclasses
``ValueError`` so that callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations


class VosjaxError(ValueError):
    """Bad input to vosjax: the message names what is wrong and how to fix it."""
