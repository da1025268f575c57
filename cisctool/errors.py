"""Errors a user can fix: the CLI prints them on one line and exits with code 2."""


class InputError(Exception):
    """Bad user input (file, key or value); the message names it and says what is wrong."""
