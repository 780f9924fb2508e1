"""The SCIM 2.0 blueprint (/scim/v2): thin HTTP over agent.services.provisioning."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from agent.scim import discovery, search
from agent.scim.characters import describe, refusal
from agent.scim.cursor import CursorCodec, CursorRefused, Position, query_digest
from agent.scim.errors import ScimError
from agent.scim.filter import ResourceType
from agent.scim.render import cursor_list_response, list_response, render_group, render_user
from agent.scim.resources import (
    etag,
    member_display_requested,
    parse_attr_list,
    project,
)
from agent.services.provisioning import ListQuery, Provisioning
from agent.storage.cursor_pages import CursorPage
from agent.storage.records import Page
from agent.web import early_errors, json_body
from agent.web.auth import TokenSet, bearer_digest
from agent.web.db_errors import DETAIL as DATABASE_ERROR
from agent.web.db_errors import log_database_error
from agent.web.ratelimit import retry_after_header
from agent.web.scim_response import SCIM_JSON, error_response, scim_response

# A larger startIndex is answered as this one: past the end of any real result set (an empty
# page with the true totalResults) and still a 64-bit OFFSET on SQLite and PostgreSQL.
MAX_START_INDEX = 2**31
log = logging.getLogger("seat_agent.scim")


class _TolerantBlueprint(Blueprint):
    """Every route also answers with a trailing slash (``/Users/``, ``/Users/<id>/``): most
    servers and the IdPs' test tools accept it, and RFC 7644 §3.2 names no form."""

    def add_url_rule(self, rule: str, *args: Any, **options: Any) -> None:
        options.setdefault("strict_slashes", False)
        super().add_url_rule(rule, *args, **options)


bp = _TolerantBlueprint("scim", __name__, url_prefix="/scim/v2")


def _provisioning() -> Provisioning:
    return current_app.extensions["seat_agent"].provisioning


def _base_url() -> str:
    """Where the resources' ``meta.location`` point: this endpoint as the client named it."""
    return f"{request.scheme}://{request.host}/scim/v2"


@bp.errorhandler(ScimError)
def _scim_error(err: ScimError) -> Response:
    return error_response(err)


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    detail = {
        404: "Unknown SCIM endpoint",
        405: "Method not allowed on this endpoint",
        413: "Request body too large",
    }.get(status, err.description or err.name)
    scim_type = "invalidSyntax" if status == 400 else None  # §3.12: scimType is for 400s
    return error_response(ScimError(status, detail, scim_type))


@bp.errorhandler(OperationalError)
@bp.errorhandler(InterfaceError)
def _database_unavailable(err: Exception) -> Response:
    """The database is down or restarting: a clean 503 the IdP retries, never a half write (the
    transaction rolled back).

    The exception: a query the database refuses as too complex (SQLite "Expression tree is too
    large", PostgreSQL "stack depth limit exceeded") is the client's filter, not an outage, and
    retrying cannot help: 400 invalidFilter (RFC 7644 §3.12)."""
    if _too_complex(err):
        log.info("query refused as too complex: %s", type(err).__name__)
        return error_response(
            ScimError(400, "Invalid filter: too complex for the database", "invalidFilter")
        )
    log.warning("database unavailable: %s", type(err).__name__)
    resp = error_response(ScimError(503, "Database temporarily unavailable; retry later"))
    resp.headers["Retry-After"] = "5"
    return resp


@bp.errorhandler(DBAPIError)
def _database_error(err: DBAPIError) -> Response:
    """Any other database error: a 500 logged without request data (agent.web.db_errors)."""
    log_database_error(err)
    return error_response(ScimError(500, DATABASE_ERROR))


_TOO_COMPLEX = ("expression tree is too large", "stack depth limit exceeded")


def _too_complex(err: Exception) -> bool:
    text = str(getattr(err, "orig", None) or err).lower()
    return any(marker in text for marker in _TOO_COMPLEX)


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def _unrouted(err: HTTPException) -> Response | HTTPException:
    """A path under /scim/v2 that no route matches is still answered with a SCIM error body
    (RFC 7644 §3.12); blueprint handlers never see unrouted requests."""
    if request.path != bp.url_prefix and not request.path.startswith(f"{bp.url_prefix}/"):
        return _elsewhere(err)
    resp = _http_error(err)
    if err.code == 405 and getattr(err, "valid_methods", None):
        resp.headers["Allow"] = ", ".join(err.valid_methods)  # type: ignore[attr-defined]
    return resp


def _elsewhere(err: HTTPException) -> Response | HTTPException:
    """Outside /scim/v2 and /admin (whose own handler answers first): JSON that says where the
    service is, rather than Flask's HTML page."""
    if early_errors.is_admin(request.path):
        return err
    if err.code == 405:
        resp = jsonify({"error": f"{request.method} is not allowed on {describe(request.path)}"})
        if getattr(err, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(err.valid_methods)  # type: ignore[attr-defined]
    else:
        resp = jsonify(
            {
                "error": f"nothing at {describe(request.path)}: SCIM is at /scim/v2, the admin"
                " API under /admin, the status page at /admin/"
            }
        )
    resp.status_code = err.code or 404
    return resp


@bp.before_request
def _authenticate() -> Response | None:
    agent = current_app.extensions["seat_agent"]
    tokens: TokenSet = agent.scim_tokens
    authorization = request.headers.get("Authorization")
    if not tokens.accepts(authorization):
        return error_response(ScimError(401, "Missing or invalid bearer token"))
    wait = agent.rate_limiter.take(bearer_digest(authorization) or "")
    if wait > 0:
        resp = error_response(ScimError(429, "Too many requests for this token; retry later"))
        resp.headers["Retry-After"] = retry_after_header(wait)
        return resp
    return None


@bp.before_request
def _refuse_unstorable_text() -> None:
    """Path ids and query parameters go through the same character check as bodies
    (agent.scim.characters): an id no database can hold names no resource (404); a query
    parameter that holds such text is a 400 naming it. Never a 500 from the database."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and refusal(value) is not None:
            raise ScimError(404, f"{_ID_OF.get(name, 'Resource')} {describe(value)} not found")
    for name, value in request.args.items(multi=True):
        reason = refusal(name) or refusal(value)
        if reason is not None:
            raise ScimError(
                400,
                f"Query parameter '{describe(name)}' contains {reason}, which cannot be stored; "
                "remove it",
                "invalidValue",
            )


_ID_OF = {"user_id": "User", "group_id": "Group", "name": "ResourceType", "schema_id": "Schema"}


def _json_body() -> Any:
    """The request body as JSON, or a SCIM error (agent.web.json_body). RFC 7644 §3.12
    defines scimType for 400s only, so 413 and 415 carry none."""
    ctype = json_body.refused_media_type()
    if ctype is not None:
        raise ScimError(415, f"Unsupported content type {ctype}; use {SCIM_JSON}")
    try:
        return json_body.parse(json_body.read())
    except json_body.BodyRefused as err:
        raise ScimError(err.status, err.detail, err.scim_type) from None


def _int_param(args: Any, name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ScimError(400, f"'{name}' must be an integer", "invalidValue") from None


# -- cursor paging (RFC 9865) ----------------------------------------------------------------


def _cursor_request(args: Any) -> tuple[str, int] | None:
    """``(cursor, count)`` when the request asks for cursor paging (a ``cursor`` parameter,
    empty for the first page), else None (index paging, the default: RFC 9865 §2.4).

    * ``startIndex`` with ``cursor`` asks for both kinds of paging at once: 400 invalidValue.
    * ``sortBy`` with ``cursor``: 400 invalidValue. A cursor is a position in creation order
      (``seq``); RFC 9865 §2.2 says cursor pages "should" be sorted when sorting is offered,
      and a page in another order than the one asked for would be wrong without a word, so
      the request is refused and names the two ways that work.
    * ``count`` above maxPageSize: 400 invalidCount (RFC 9865 §2.1; index paging serves fewer
      instead, as RFC 7644 §3.4.2.4 allows); below 0 counts as 0 (RFC 9865 §2).
    """
    cursor = args.get("cursor")
    if cursor is None:
        return None
    if args.get("startIndex") not in (None, ""):
        raise ScimError(
            400,
            "startIndex and cursor ask for two kinds of paging: send startIndex (index paging) "
            "or cursor (cursor paging, RFC 9865), not both",
            "invalidValue",
        )
    if args.get("sortBy"):
        raise ScimError(
            400,
            "sortBy cannot be used with cursor paging (cursor pages come in creation order): "
            "leave sortBy out, or page a sorted list with startIndex",
            "invalidValue",
        )
    settings = current_app.extensions["seat_agent"].settings.scim
    count = max(_int_param(args, "count", settings.default_page_size), 0)
    if count > settings.max_page_size:
        raise ScimError(
            400,
            f"count must be from 0 to {settings.max_page_size} (maxPageSize) with cursor paging",
            "invalidCount",
        )
    return str(cursor), count


def _cursors() -> CursorCodec:
    return current_app.extensions["seat_agent"].cursors


def _position(cursor: str, walk: str, count: int, query: int) -> Position | None:
    """The position a request's cursor continues from; None for the first page."""
    if cursor == "":
        return None
    try:
        return _cursors().decode(cursor, walk, count, query)
    except CursorRefused as err:
        raise ScimError(400, err.detail, err.scim_type) from None


def _cursor_links(
    page: CursorPage[Any], position: Position | None, count: int, walk: str, query: int
) -> tuple[str | None, str | None]:
    """(nextCursor, previousCursor) of a keyset page. Forward: a next page when a further
    match exists, a previous one unless this is the first page. Backward (a previousCursor
    was followed): a previous page when a further match exists before it, and always a next
    one (the page it came from)."""
    if count == 0:
        return None, None
    codec = _cursors()

    def after(seq: int) -> str:
        return codec.encode(walk, Position(seq), count, query)

    def before(seq: int) -> str:
        return codec.encode(walk, Position(seq, backward=True), count, query)

    if position is not None and position.backward:
        last = page.seqs[-1] if page.seqs else position.seq - 1
        return after(last), before(page.seqs[0]) if page.more else None
    nxt = after(page.seqs[-1]) if page.more else None
    if position is None:
        return nxt, None
    return nxt, before(page.seqs[0] if page.seqs else position.seq + 1)


def _list_query(args: Any) -> tuple[ListQuery, list[str] | None, list[str] | None]:
    """RFC 7644 §3.4.2.4: 1-based startIndex (values < 1 mean 1); count < 0 means 0."""
    settings = current_app.extensions["seat_agent"].settings.scim
    start = min(max(_int_param(args, "startIndex", 1), 1), MAX_START_INDEX)
    count = _int_param(args, "count", settings.default_page_size)
    count = min(max(count, 0), settings.max_page_size)
    order = (args.get("sortOrder") or "ascending").lower()
    if order not in ("ascending", "descending"):
        raise ScimError(400, "sortOrder must be 'ascending' or 'descending'", "invalidValue")
    attributes = _attr_list(args.get("attributes"))
    excluded = _attr_list(args.get("excludedAttributes"))
    with_members = _loads_members(attributes, excluded)
    query = ListQuery(
        filter=args.get("filter") or None,
        start_index=start,
        count=count,
        sort_by=args.get("sortBy") or None,
        descending=order == "descending",
        with_members=with_members,
    )
    return query, attributes, excluded


def _attr_list(raw: Any) -> list[str] | None:
    if isinstance(raw, list):
        return [str(a) for a in raw] or None
    return parse_attr_list(raw)


def _mentions(attrs: list[str] | None, name: str) -> bool:
    """``name`` or one of its sub-attributes is listed (``members``, ``members.value``)."""
    return any(a.lower().split(":")[-1].split(".")[0] == name for a in attrs or [])


def _names(attrs: list[str] | None, name: str) -> bool:
    """``name`` itself is listed (``members``), optionally schema-qualified; not a sub-attribute."""
    return any(a.strip().lower().split(":")[-1] == name for a in attrs or [])


def _loads_members(attrs: list[str] | None, excluded: list[str] | None) -> bool:
    """Whether a Group response needs its members: ``excludedAttributes=members`` skips loading
    them (a group can have 50,000); excluding only ``members.value`` does not."""
    return not _names(excluded, "members") and (attrs is None or _mentions(attrs, "members"))


def _group_body(record: Any, attrs: list[str] | None, excluded: list[str] | None) -> dict:
    """A rendered, projected Group; ``members.display`` only when asked for (returned
    "request", agent.scim.resources.member_display_requested)."""
    body = render_group(record, _base_url(), member_display_requested(attrs))
    return project(body, attrs, excluded)


def _projection() -> tuple[list[str] | None, list[str] | None]:
    return _attr_list(request.args.get("attributes")), _attr_list(
        request.args.get("excludedAttributes")
    )


def _seat_extension() -> bool:
    """``[scim] seat_extension``: whether Users carry the read-only seat-agent extension."""
    return bool(current_app.extensions["seat_agent"].settings.scim.seat_extension)


def _render_user(record: Any, base: str) -> dict:
    settings = current_app.extensions["seat_agent"].settings
    return render_user(record, base, settings.license.fallback_role, settings.scim.seat_extension)


def _user_out(record: Any, status: int = 200, location: bool = False) -> Response:
    body = _render_user(record, _base_url())
    headers = {"ETag": etag(record.version)}
    if location:
        headers["Location"] = body["meta"]["location"]
    attrs, excluded = _projection()
    return scim_response(project(body, attrs, excluded), status, headers)


def _group_out(record: Any, status: int = 200, location: bool = False) -> Response:
    attrs, excluded = _projection()
    body = _group_body(record, attrs, excluded)
    headers = {"ETag": etag(record.version)}
    if location:
        headers["Location"] = body["meta"]["location"]
    return scim_response(body, status, headers)


# -- Users ---------------------------------------------------------------------------------


@bp.post("/Users")
def create_user() -> Response:
    return _user_out(_provisioning().create_user(_json_body()), 201, location=True)


@bp.get("/Users")
def list_users() -> Response:
    return _list_users(request.args)


def _list_users(args: Any) -> Response:
    by_cursor = _cursor_request(args)
    if by_cursor is not None:
        return _users_by_cursor(args, *by_cursor)
    query, attrs, excluded = _list_query(args)
    page = _provisioning().list_users(query)
    base = _base_url()
    resources = [project(_render_user(r, base), attrs, excluded) for r in page.items]
    return scim_response(list_response(resources, page.total, query.start_index))


def _users_by_cursor(args: Any, cursor: str, count: int) -> Response:
    filter_text = args.get("filter") or None
    query = query_digest(filter_text)
    position = _position(cursor, "Users", count, query)
    page = _provisioning().user_cursor_page(filter_text, position, count)
    attrs, excluded = _attr_list(args.get("attributes")), _attr_list(args.get("excludedAttributes"))
    base = _base_url()
    resources = [project(_render_user(r, base), attrs, excluded) for r in page.items]
    nxt, previous = _cursor_links(page, position, count, "Users", query)
    return scim_response(cursor_list_response(resources, page.total, nxt, previous))


@bp.get("/Users/<user_id>")
def get_user(user_id: str) -> Response:
    return _user_out(_provisioning().get_user(user_id))


@bp.put("/Users/<user_id>")
def replace_user(user_id: str) -> Response:
    body = _json_body()
    return _user_out(_provisioning().replace_user(user_id, body, request.headers.get("If-Match")))


@bp.patch("/Users/<user_id>")
def patch_user(user_id: str) -> Response:
    body = _json_body()
    return _user_out(_provisioning().patch_user(user_id, body, request.headers.get("If-Match")))


@bp.delete("/Users/<user_id>")
def delete_user(user_id: str) -> Response:
    _provisioning().delete_user(user_id, request.headers.get("If-Match"))
    return Response(status=204)


# -- Groups --------------------------------------------------------------------------------


@bp.post("/Groups")
def create_group() -> Response:
    return _group_out(_provisioning().create_group(_json_body()), 201, location=True)


@bp.get("/Groups")
def list_groups() -> Response:
    return _list_groups(request.args)


def _list_groups(args: Any) -> Response:
    by_cursor = _cursor_request(args)
    if by_cursor is not None:
        return _groups_by_cursor(args, *by_cursor)
    query, attrs, excluded = _list_query(args)
    page = _provisioning().list_groups(query)
    resources = [_group_body(r, attrs, excluded) for r in page.items]
    return scim_response(list_response(resources, page.total, query.start_index))


def _groups_by_cursor(args: Any, cursor: str, count: int) -> Response:
    filter_text = args.get("filter") or None
    query = query_digest(filter_text)
    position = _position(cursor, "Groups", count, query)
    attrs, excluded = _attr_list(args.get("attributes")), _attr_list(args.get("excludedAttributes"))
    with_members = _loads_members(attrs, excluded)
    page = _provisioning().group_cursor_page(filter_text, position, count, with_members)
    resources = [_group_body(r, attrs, excluded) for r in page.items]
    nxt, previous = _cursor_links(page, position, count, "Groups", query)
    return scim_response(cursor_list_response(resources, page.total, nxt, previous))


@bp.get("/Groups/<group_id>")
def get_group(group_id: str) -> Response:
    attrs, excluded = _projection()
    return _group_out(_provisioning().get_group(group_id, _loads_members(attrs, excluded)))


@bp.put("/Groups/<group_id>")
def replace_group(group_id: str) -> Response:
    body = _json_body()
    return _group_out(
        _provisioning().replace_group(group_id, body, request.headers.get("If-Match"))
    )


@bp.patch("/Groups/<group_id>")
def patch_group(group_id: str) -> Response:
    """PATCH on a Group answers 204 with the new ETag: RFC 7644 §3.5.2 allows it, and a 200
    would have to carry the entire resource, members included (they can be 50,000)."""
    body = _json_body()
    record = _provisioning().patch_group(group_id, body, request.headers.get("If-Match"))
    return Response(status=204, headers={"ETag": etag(record.version)})


@bp.delete("/Groups/<group_id>")
def delete_group(group_id: str) -> Response:
    _provisioning().delete_group(group_id, request.headers.get("If-Match"))
    return Response(status=204)


# -- POST /.search (RFC 7644 §3.4.3) -------------------------------------------------------


@bp.post("/Users/.search")
def search_users() -> Response:
    return _list_users(_search_args())


@bp.post("/Groups/.search")
def search_groups() -> Response:
    return _list_groups(_search_args())


@bp.post("/.search")
def search_root() -> Response:
    """RFC 7644 §3.4.3 search at the server root: Users and Groups in one list. The filter,
    sortBy and paging rules are in agent.scim.search."""
    args = _search_args()
    by_cursor = _cursor_request(args)
    if by_cursor is not None:
        return _search_by_cursor(args, *by_cursor)
    query, attrs, excluded = _list_query(args)
    types = search.filterable_types(query.filter)
    sort_attrs = search.sort_attrs(query.sort_by, types) if query.sort_by else {}
    provisioning = _provisioning()
    base = _base_url()

    def fetch(resource_type: ResourceType, start: int, count: int, sort: bool = True) -> Page:
        sort_by = query.sort_by if sort and sort_attrs.get(resource_type) else None
        q = dataclasses.replace(query, start_index=start, count=count, sort_by=sort_by)
        return (provisioning.list_users if resource_type == "User" else provisioning.list_groups)(q)

    def render(resource_type: ResourceType, record: Any) -> dict:
        if resource_type == "User":
            return _render_user(record, base)
        return render_group(record, base)

    totals = {t: fetch(t, 1, 0, sort=False).total for t in types}
    picked: list[tuple[ResourceType, Any]]
    if not query.sort_by or sum(1 for n in totals.values() if n) <= 1:
        picked = [
            (s.resource_type, record)
            for s in search.unsorted_slices(totals, query.start_index, query.count)
            for record in fetch(s.resource_type, s.start_index, s.count).items
        ]
    else:
        window = search.merge_window(query.start_index, query.count)
        streams = [
            ([((t, r), render(t, r)) for r in fetch(t, 1, window).items], sort_attrs[t])
            for t in types
        ]
        merged = search.merge_sorted(streams, query.descending)
        picked = merged[query.start_index - 1 : query.start_index - 1 + query.count]
    resources = [
        project(render(t, r), attrs, excluded) if t == "User" else _group_body(r, attrs, excluded)
        for t, r in picked
    ]
    return scim_response(list_response(resources, sum(totals.values()), query.start_index))


def _search_by_cursor(args: Any, cursor: str, count: int) -> Response:
    """Cursor paging of the root search: every matching User, then every matching Group (the
    unsorted order of agent.scim.search), each in creation order. The cursor names the type
    reached (its phase) and the seq in it. No previousCursor (RFC 9865 §2: optional)."""
    filter_text = args.get("filter") or None
    types = search.filterable_types(filter_text)
    query = query_digest(filter_text)
    position = _position(cursor, "search", count, query)
    if position is not None and (position.backward or position.phase >= len(types)):
        raise ScimError(400, "Cursor value is invalid for this search", "invalidCursor")
    attrs, excluded = _attr_list(args.get("attributes")), _attr_list(args.get("excludedAttributes"))
    with_members = _loads_members(attrs, excluded)
    provisioning = _provisioning()
    base = _base_url()
    phase, after = (position.phase, position.seq) if position is not None else (0, 0)
    totals: dict[int, int] = {}
    resources: list[dict] = []
    last: Position | None = None
    more = False
    full_at: int | None = None  # the type the page filled up before reaching
    for i in range(phase, len(types)):
        wanted = count - len(resources)
        if wanted == 0:
            full_at = i
            break
        start = Position(after if i == phase else 0)
        page: CursorPage[Any]
        if types[i] == "User":
            page = provisioning.user_cursor_page(filter_text, start, wanted)
            resources += [project(_render_user(r, base), attrs, excluded) for r in page.items]
        else:
            page = provisioning.group_cursor_page(filter_text, start, wanted, with_members)
            resources += [_group_body(r, attrs, excluded) for r in page.items]
        totals[i] = page.total
        if page.seqs:
            last = Position(page.seqs[-1], phase=i)
        if page.more:
            more = True
            break
    for i, resource_type in enumerate(types):
        if i not in totals:  # a type before the cursor's, or after a full page
            totals[i] = _search_total(provisioning, resource_type, filter_text)
    if full_at is not None:
        more = any(totals[i] for i in range(full_at, len(types)))
    nxt = None
    if more and count > 0 and last is not None:
        nxt = _cursors().encode("search", last, count, query)
    return scim_response(cursor_list_response(resources, sum(totals.values()), nxt, None))


def _search_total(provisioning: Provisioning, resource_type: ResourceType, text: str | None) -> int:
    q = ListQuery(filter=text, count=0, with_members=False)
    return (provisioning.list_users if resource_type == "User" else provisioning.list_groups)(
        q
    ).total


def _search_args() -> dict[str, Any]:
    body = _json_body()
    if not isinstance(body, dict):
        raise ScimError(400, "SearchRequest must be a JSON object", "invalidSyntax")
    args: dict[str, Any] = {}
    for key in ("filter", "startIndex", "count", "sortBy", "sortOrder"):
        if body.get(key) is not None:
            args[key] = str(body[key])
    cursor = body.get("cursor")
    if cursor is not None:  # RFC 9865 §3: a string, empty for the first page
        if not isinstance(cursor, str):
            raise ScimError(
                400, "'cursor' must be a string (empty for the first page)", "invalidCursor"
            )
        args["cursor"] = cursor
    for key in ("attributes", "excludedAttributes"):
        value = body.get(key)
        if value is None:
            continue
        # RFC 7644 §3.4.3: a multi-valued list of strings (a comma-separated string is also
        # taken, as in the query parameter).
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(a, str) for a in value)
        ):
            args[key] = value
        else:
            raise ScimError(400, f"'{key}' must be a list of attribute names", "invalidValue")
    return args


# -- discovery (RFC 7644 §4) ---------------------------------------------------------------


@bp.get("/ServiceProviderConfig")
def service_provider_config() -> Response:
    settings = current_app.extensions["seat_agent"].settings
    return scim_response(
        discovery.service_provider_config(
            _base_url(),
            settings.scim.max_page_size,
            settings.server.max_body_bytes,
            default_page_size=settings.scim.default_page_size,
            cursor_timeout=_cursors().timeout_seconds,
        )
    )


@bp.get("/ResourceTypes")
def resource_types() -> Response:
    items = discovery.resource_types(_base_url(), _seat_extension())
    return scim_response(list_response(items, len(items), 1))


@bp.get("/ResourceTypes/<name>")
def resource_type(name: str) -> Response:
    found = discovery.resource_type_by_id(_base_url(), name, _seat_extension())
    if found is None:
        raise ScimError(404, f"ResourceType {name} not found")
    return scim_response(found)


@bp.get("/Schemas")
def schemas() -> Response:
    items = discovery.schemas(_base_url(), _seat_extension())
    return scim_response(list_response(items, len(items), 1))


@bp.get("/Schemas/<schema_id>")
def schema(schema_id: str) -> Response:
    found = discovery.schema_by_id(_base_url(), schema_id, _seat_extension())
    if found is None:
        raise ScimError(404, f"Schema {schema_id} not found")
    return scim_response(found)
