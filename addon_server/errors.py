"""Exceptions shared by several rooms of the add-on."""


class ModelNotInstalledError(Exception):
    """The weights a model needs are not on this machine; it is reported, never faked."""


class BackendUnavailableError(Exception):
    """A detector served by another process (Triton) cannot answer now; it may come back.

    ``code`` names the backend's failure for the API (503) and the /health issue alike.
    """

    code = "backend_unavailable"


class TritonUnavailableError(BackendUnavailableError):
    """The Triton server, or the model on it, cannot answer; the message names which and why."""

    code = "triton_unavailable"
