"""The schema URNs this server knows (RFC 7643 §8.7.1, RFC 7644 §3.12, §3.4.2), in one place so
the schema definitions (discovery), the name resolver (names) and the parsers share them."""

from __future__ import annotations

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SEAT_EXT = "urn:ietf:params:scim:schemas:extension:seatagent:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
