"""User-facing errors.

Anything a person can cause (a bad file, an impossible tempo, a region past the end of
the audio) raises :class:`Sa3Error` with one line that names the bad value and says what
to do. The CLI prints that line and exits with status 2, never a traceback.
"""


class Sa3Error(Exception):
    """An error caused by input a person gave; the message is shown to them as is."""
