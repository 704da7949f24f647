"""Errors for bad input that the command line reports in one line, without a traceback."""


class LandmarksError(Exception):
    """Bad input or settings: the message names the file, row, key or setting at fault."""


class ConfigError(LandmarksError, ValueError):
    """A configuration key or value that cannot be used."""


class DataError(LandmarksError, ValueError):
    """A data file, row or image that cannot be used."""
