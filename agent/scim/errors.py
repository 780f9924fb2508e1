"""The one exception type that carries a SCIM error (RFC 7644 §3.12)."""


class ScimError(Exception):
    """A SCIM protocol error (RFC 7644 §3.12); the web layer makes it a response in one place."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
