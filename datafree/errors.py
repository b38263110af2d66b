"""Errors that mean "the user's input is wrong": the CLI prints them as one line and exits 2."""


class DatafreeError(Exception):
    """Bad input, with a message that names the problem and the fix."""


class ConfigError(DatafreeError):
    """A config key, value or name that cannot be used."""


class CheckpointError(DatafreeError):
    """A checkpoint file that is missing, unreadable, unsafe or of the wrong kind."""


class DivergenceError(DatafreeError):
    """A loss became NaN or Inf; the run stopped and kept its last good checkpoint."""
