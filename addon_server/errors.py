"""Exceptions shared by several rooms of the add-on."""


class ModelNotInstalledError(Exception):
    """The weights a model needs are not on this machine; it is reported, never faked."""
