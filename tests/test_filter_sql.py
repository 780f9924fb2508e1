"""SCIM filters as SQL (RFC 7644 §3.4.2.2): exact result sets on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from agent.scim.errors import ScimError
from agent.scim.filter import ENTERPRISE_USER as ENT
from agent.scim.filter import SEAT_USER as SEAT
from agent.scim.filter import parse_filter
from agent.storage import tables
from agent.storage.filter_sql import group_sort_column, group_where, user_sort_column, user_where
from agent.storage.tables import group_members, groups, user_values, users

PG_BASE = os.environ.get("SEAT_AGENT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("SEAT_AGENT_REQUIRE_PG") == "1"


def ts(text_: str) -> datetime:
    return datetime.fromisoformat(text_).astimezone(UTC)


def _user(uid: str, user_name: str, **kw: Any) -> dict[str, Any]:
    # executemany wants the same keys in every row: every nullable column defaults to None.
    row: dict[str, Any] = {c.name: None for c in users.columns if c.nullable}
    row |= {
        "id": uid,
        "user_name": user_name,
        "user_name_ci": user_name.lower(),
        "active": True,
        "created": ts("2024-01-01T00:00:00+00:00"),
        "last_modified": ts("2024-01-01T00:00:00+00:00"),
        "resource": "{}",
        "version": 1,
        "app_status": "Active",
        "license_state": "free",
        "holds_seat": False,
        "on_fallback": False,
    }
    row.update(kw)
    return row


USERS = [
    _user(
        "U-1",
        "Bjensen",
        external_id="Ext-1",
        display_name="Barbara Jensen",
        nick_name="Babs",
        title="Boss",
        user_type="Employee",
        locale="en-US",
        given_name="Barbara",
        family_name="Jensen",
        profile_url="https://Example.com/bjensen",
        employee_number="701984",
        department="Engineering",
        manager_id="U-2",
        license_state="seat",
        last_modified=ts("2024-01-10T12:00:00+00:00"),
    ),
    _user(
        "U-2",
        "a_b%c",
        display_name="Percent",
        active=False,
        department="Sales",
        created=ts("2024-02-15T00:00:00+00:00"),
        last_modified=ts("2024-03-01T00:00:00+00:00"),
    ),
    _user(
        "U-3",
        "axbyc",
        external_id="ext-1",
        display_name="X Y",
        title="boss of all",
        given_name="Bob",
        family_name="Jensen",
        last_modified=ts("2024-02-01T09:30:00+00:00"),
    ),
    _user(
        "U-4",
        "Zed",
        display_name="Z/ed",
        title="",
        active=False,
        last_modified=ts("2023-12-31T23:00:00+00:00"),
    ),
]


def _val(uid: str, attr: str, value: str | None, type_: str | None, primary: bool = False):
    return {
        "user_id": uid,
        "attr": attr,
        "value_ci": value.lower() if value is not None else None,
        "type": type_,
        "is_primary": primary,
    }


USER_VALUES = [
    _val("U-1", "emails", "bjensen@example.com", "work", True),
    _val("U-1", "emails", "babs@home.org", "home"),
    _val("U-2", "emails", "b@corp.com", "work"),
    _val("U-2", "emails", "a@corp.com", "home"),
    _val("U-3", "emails", "A@corp.com", "Work", True),
    _val("U-3", "phoneNumbers", "+1 555 0100", "mobile"),
    _val("U-4", "roles", "Admin", None),
]

GROUPS = [
    ("G-1", "Engineering", None, "2024-01-05T00:00:00+00:00"),
    ("G-2", "Sales", None, "2024-02-05T00:00:00+00:00"),
    ("G-3", "Empty", "gx", "2024-03-05T00:00:00+00:00"),
]
MEMBERS = [("G-1", "U-1"), ("G-1", "U-3"), ("G-2", "U-2")]
ALL = {"Bjensen", "a_b%c", "axbyc", "Zed"}


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # any failure to connect means "not available"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def engine(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Engine]:
    schema = None
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("filter_sql") / "filter.db"
        eng = create_engine(f"sqlite:///{path}")
    else:
        reason = _pg_reachable()
        if reason is not None:
            message = f"PostgreSQL not reachable at {PG_BASE} ({reason})"
            if REQUIRE_PG:
                pytest.fail(message)
            pytest.skip(message)
        schema = f"t_filter_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_BASE)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        admin.dispose()
        eng = create_engine(PG_BASE, connect_args={"options": f"-csearch_path={schema}"})
    try:
        tables.metadata.create_all(eng)
        with eng.begin() as conn:
            conn.execute(insert(users), USERS)
            conn.execute(insert(user_values), USER_VALUES)
            conn.execute(
                insert(groups),
                [
                    {
                        "id": gid,
                        "display_name": name,
                        "display_name_ci": name.lower(),
                        "external_id": ext,
                        "created": ts(modified),
                        "last_modified": ts(modified),
                        "resource": "{}",
                        "version": 1,
                    }
                    for gid, name, ext, modified in GROUPS
                ],
            )
            conn.execute(insert(group_members), [{"group_id": g, "user_id": u} for g, u in MEMBERS])
        yield eng
    finally:
        eng.dispose()
        if schema is not None:
            admin = create_engine(PG_BASE)
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


def user_names(engine: Engine, filter_text: str) -> set[str]:
    stmt = select(users.c.user_name).where(user_where(parse_filter(filter_text, "User")))
    with engine.connect() as conn:
        return set(conn.execute(stmt).scalars())


def group_names(engine: Engine, filter_text: str) -> set[str]:
    stmt = select(groups.c.display_name).where(group_where(parse_filter(filter_text, "Group")))
    with engine.connect() as conn:
        return set(conn.execute(stmt).scalars())


USER_CASES: list[tuple[str, set[str]]] = [
    # eq / ne, case-insensitive strings (RFC 7643 §2.2 caseExact false)
    ('userName eq "BJENSEN"', {"Bjensen"}),
    ('userName eq "bjensen"', {"Bjensen"}),
    ('title eq "boss"', {"Bjensen"}),
    ('title ne "boss"', {"a_b%c", "axbyc", "Zed"}),  # NULL title counts as "not equal"
    ('displayName eq "barbara jensen"', {"Bjensen"}),
    ('nickName eq "BABS"', {"Bjensen"}),
    ('userType eq "employee"', {"Bjensen"}),
    ('locale eq "EN-us"', {"Bjensen"}),
    ('profileUrl co "example.COM"', {"Bjensen"}),
    # substring operators
    ('title co "OSS"', {"Bjensen", "axbyc"}),
    ('title sw "boss "', {"axbyc"}),
    ('title sw "BOSS"', {"Bjensen", "axbyc"}),
    ('title ew "ALL"', {"axbyc"}),
    # ordering: code point order on the lowered value
    ('userName gt "B"', {"Bjensen", "Zed"}),
    ('userName ge "bjensen"', {"Bjensen", "Zed"}),
    ('userName lt "axbyc"', {"a_b%c"}),  # '_' (0x5f) < 'x' (0x78)
    ('userName le "AXBYC"', {"a_b%c", "axbyc"}),
    ('title gt "boss"', {"axbyc"}),
    ('title lt "boss"', {"Zed"}),  # "" sorts first; NULL never compares
    # null (RFC 7643 §2.5: null is unassigned): eq null is not pr, ne null is pr
    ("title eq null", {"a_b%c", "Zed"}),
    ("title ne null", {"Bjensen", "axbyc"}),
    ('title eq "null"', set()),
    ("roles[type eq null]", {"Zed"}),
    ("phoneNumbers.value eq null", {"Bjensen", "a_b%c", "Zed"}),
    ("not (externalId eq null)", {"Bjensen", "axbyc"}),
    # pr: non-NULL and non-empty
    ("title pr", {"Bjensen", "axbyc"}),
    ("not (title pr)", {"a_b%c", "Zed"}),
    ("externalId pr", {"Bjensen", "axbyc"}),
    ("active pr", ALL),
    ("meta.lastModified pr", ALL),
    # LIKE metacharacters match literally
    ('userName co "_"', {"a_b%c"}),
    ('userName co "%"', {"a_b%c"}),
    ('userName sw "a_b"', {"a_b%c"}),
    ('userName ew "b%c"', {"a_b%c"}),
    ('userName eq "a_b%c"', {"a_b%c"}),
    ('userName sw "a"', {"a_b%c", "axbyc"}),
    # sw on the lowered, indexed columns is a range: still exact, metacharacters literal
    ('userName sw "a_"', {"a_b%c"}),  # a LIKE 'a_%' would match axbyc too
    ('userName sw "A_B%"', {"a_b%c"}),
    ('userName sw "a%"', set()),
    ('userName sw ""', ALL),
    ('userName sw "bjensen"', {"Bjensen"}),
    ('userName sw "bjensenx"', set()),
    ('userName sw "Z"', {"Zed"}),
    ('userName sw "\\udbff\\udfff"', set()),  # U+10FFFF: no upper bound
    ('not (userName sw "a")', {"Bjensen", "Zed"}),
    ('emails.value sw "A@"', {"a_b%c", "axbyc"}),
    ('emails[type eq "work" and value sw "b"]', {"Bjensen", "a_b%c"}),
    ('displayName co "/"', {"Zed"}),  # the LIKE escape character itself
    ('displayName co "z/E"', {"Zed"}),
    # booleans bound as booleans
    ("active eq false", {"a_b%c", "Zed"}),
    ('active eq "false"', {"a_b%c", "Zed"}),
    ("active eq true", {"Bjensen", "axbyc"}),
    ("active ne true", {"a_b%c", "Zed"}),
    ("active ne false", {"Bjensen", "axbyc"}),
    ("not (active eq false)", {"Bjensen", "axbyc"}),
    # case-exact attributes (id, externalId)
    ('id eq "U-1"', {"Bjensen"}),
    ('id eq "u-1"', set()),
    ('externalId eq "Ext-1"', {"Bjensen"}),
    ('externalId eq "ext-1"', {"axbyc"}),
    ('externalId ne "Ext-1"', {"a_b%c", "axbyc", "Zed"}),
    ('externalId sw "EXT"', set()),
    ('externalId sw "Ext"', {"Bjensen"}),
    ('externalId co "xt-"', {"Bjensen", "axbyc"}),
    ('externalId co "XT"', set()),
    ('externalId ew "T-1"', set()),
    ('externalId ew "t-1"', {"Bjensen", "axbyc"}),
    ('externalId ew "xExt-1"', set()),
    ('externalId gt "Ext-1"', {"axbyc"}),  # 'e' > 'E'
    ('id sw "U-"', ALL),
    ('id co ""', ALL),
    # logical operators and grouping
    ('title eq "boss" or userName eq "zed"', {"Bjensen", "Zed"}),
    ('active eq true and title co "all"', {"axbyc"}),
    ('userName eq "zed" or active eq true and title co "all"', {"Zed", "axbyc"}),
    ('(userName eq "zed" or active eq true) and title co "all"', {"axbyc"}),
    ('title co "all" and active eq true or userName eq "zed"', {"axbyc", "Zed"}),
    ('not (title eq "boss")', {"a_b%c", "axbyc", "Zed"}),
    ('not (not (title eq "boss"))', {"Bjensen"}),
    ('not (title ne "boss")', {"Bjensen"}),
    ('not (title co "boss")', {"a_b%c", "Zed"}),
    ('not (title gt "a")', {"a_b%c", "Zed"}),
    ('not (externalId eq "Ext-1" or externalId eq "ext-1")', {"a_b%c", "Zed"}),
    ('not (title eq "boss") and not (active eq false)', {"axbyc"}),
    # name.* and value path on a singular complex attribute
    ('name.givenName eq "barbara"', {"Bjensen"}),
    ('name.familyName eq "JENSEN"', {"Bjensen", "axbyc"}),
    ('name[givenName sw "B" and familyName eq "jensen"]', {"Bjensen", "axbyc"}),
    ("name.formatted pr", set()),
    # multi-valued attributes: any value, conditions on the same value
    ('emails.value eq "A@CORP.COM"', {"a_b%c", "axbyc"}),
    ('emails eq "bjensen@example.com"', {"Bjensen"}),
    ('emails co "example"', {"Bjensen"}),
    ('emails[type eq "work" and value eq "a@corp.com"]', {"axbyc"}),
    ('emails[type eq "home" and value eq "a@corp.com"]', {"a_b%c"}),
    ('emails[type eq "work"].value eq "a@corp.com"', {"axbyc"}),
    ('emails[type eq "WORK" and value co "@corp"]', {"a_b%c", "axbyc"}),
    ('emails[type eq "work" or value ew ".org"]', {"Bjensen", "a_b%c", "axbyc"}),
    ('emails[not (type eq "work")]', {"Bjensen", "a_b%c"}),
    ('emails[type ne "work"]', {"Bjensen", "a_b%c"}),
    ("emails[primary eq true]", {"Bjensen", "axbyc"}),
    ("emails[primary eq false]", {"Bjensen", "a_b%c"}),
    ('emails[type eq "home" and primary eq true]', set()),
    ('emails[type eq "work"] pr', {"Bjensen", "a_b%c", "axbyc"}),
    ("emails pr", {"Bjensen", "a_b%c", "axbyc"}),
    ("not (emails pr)", {"Zed"}),
    ('not (emails[type eq "home"])', {"axbyc", "Zed"}),
    ('emails.type eq "work" and emails.value eq "a@corp.com"', {"a_b%c", "axbyc"}),
    ('phoneNumbers[type eq "mobile"]', {"axbyc"}),
    ('emails[type eq "work"] and phoneNumbers pr', {"axbyc"}),
    ("roles pr", {"Zed"}),
    ("roles.type pr", set()),
    ('roles[type ne "x"]', {"Zed"}),
    ('roles eq "admin"', {"Zed"}),
    ('entitlements eq "admin"', set()),
    # dateTime: instants, any offset, bound in UTC
    ('meta.lastModified gt "2024-01-31T00:00:00Z"', {"a_b%c", "axbyc"}),
    ('meta.lastModified eq "2024-02-01T09:30:00Z"', {"axbyc"}),
    ('meta.lastModified eq "2024-02-01T10:30:00+01:00"', {"axbyc"}),
    ('meta.lastModified ne "2024-02-01T09:30:00Z"', {"Bjensen", "a_b%c", "Zed"}),
    ('meta.lastModified lt "2024-02-01T09:30:00Z"', {"Bjensen", "Zed"}),
    ('meta.lastModified le "2024-02-01T09:30:00Z"', {"Bjensen", "axbyc", "Zed"}),
    ('meta.lastModified ge "2024-02-01T10:30:00+01:00"', {"a_b%c", "axbyc"}),
    ('meta.lastModified gt "2024-01-01T01:00:00+02:00"', {"Bjensen", "a_b%c", "axbyc"}),
    ('meta.lastModified ge "2024-01-01T01:00:00+02:00"', ALL),
    ('meta.lastModified gt "2024-02-01T09:30:00.000001Z"', {"a_b%c"}),
    ('meta.created gt "2024-01-01T00:00:00Z"', {"a_b%c"}),
    # meta.resourceType is a constant
    ('meta.resourceType eq "User"', ALL),
    ('meta.resourceType eq "Group"', set()),
    ('meta.resourceType eq "user"', set()),  # caseExact (RFC 7643 §3.1)
    ('not (meta.resourceType eq "Group")', ALL),
    ("meta.resourceType pr", ALL),
    # extensions and URN prefixes
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "zed"', {"Zed"}),
    (f'{ENT}:department eq "engineering"', {"Bjensen"}),
    (f'{ENT}:department ne "engineering"', {"a_b%c", "axbyc", "Zed"}),
    (f'{ENT}:employeeNumber eq "701984"', {"Bjensen"}),
    (f"{ENT}:employeeNumber pr", {"Bjensen"}),
    (f'{ENT}:manager.value eq "U-2"', {"Bjensen"}),
    (f'{ENT}:manager[value eq "u-2"]', {"Bjensen"}),
    (f"{ENT}:costCenter pr", set()),
    (f'{SEAT}:licenseState eq "SEAT"', {"Bjensen"}),
    (f'{SEAT}:appStatus eq "active"', ALL),
    # group membership of users
    ('groups.value eq "G-1"', {"Bjensen", "axbyc"}),
    ('groups eq "G-2"', {"a_b%c"}),
    ('groups eq "g-2"', set()),  # group ids are caseExact
    ('groups[display eq "ENGINEERING"]', {"Bjensen", "axbyc"}),
    ('groups.display sw "sal"', {"a_b%c"}),
    ('groups[value eq "G-1" and display eq "sales"]', set()),
    ("not (groups pr)", {"Zed"}),
]


@pytest.mark.parametrize("filter_text, expected", USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_filters(engine: Engine, filter_text: str, expected: set[str]) -> None:
    assert user_names(engine, filter_text) == expected


GROUP_CASES: list[tuple[str, set[str]]] = [
    ('displayName eq "ENGINEERING"', {"Engineering"}),
    ('displayName co "E"', {"Engineering", "Sales", "Empty"}),
    ('displayName sw "e"', {"Engineering", "Empty"}),
    ('displayName ne "sales"', {"Engineering", "Empty"}),
    ('id eq "G-2"', {"Sales"}),
    ('externalId eq "gx"', {"Empty"}),
    ('externalId eq "GX"', set()),
    ('not (externalId eq "gx")', {"Engineering", "Sales"}),
    ('members.value eq "U-1"', {"Engineering"}),
    ('members.value eq "u-1"', set()),
    ('members eq "U-2"', {"Sales"}),
    ('members[value eq "U-3"]', {"Engineering"}),
    ('members[value eq "U-1" or value eq "U-2"]', {"Engineering", "Sales"}),
    ('members[value eq "U-1"] and members[value eq "U-3"]', {"Engineering"}),
    ('members[value eq "U-1" and value eq "U-3"]', set()),  # one member is not both
    ("members pr", {"Engineering", "Sales"}),
    ("not (members pr)", {"Empty"}),
    ('meta.lastModified gt "2024-02-01T00:00:00Z"', {"Sales", "Empty"}),
    ('meta.created le "2024-01-05T00:00:00Z"', {"Engineering"}),
    ('meta.resourceType eq "Group"', {"Engineering", "Sales", "Empty"}),
    ('urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "sales"', {"Sales"}),
]


@pytest.mark.parametrize("filter_text, expected", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_filters(engine: Engine, filter_text: str, expected: set[str]) -> None:
    assert group_names(engine, filter_text) == expected


def test_filters_compose_with_count_and_paging(engine: Engine) -> None:
    where = user_where(parse_filter('emails[type eq "work"]', "User"))
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(users).where(where)).scalar_one()
        page = conn.execute(
            select(users.c.user_name).where(where).order_by(users.c.seq).limit(2)
        ).scalars()
        assert count == 3
        assert list(page) == ["Bjensen", "a_b%c"]


# --- sortBy (RFC 7644 §3.4.2.3) --------------------------------------------------------------


def _sorted_users(engine: Engine, attr: str, descending: bool = False) -> list[str]:
    col = user_sort_column(attr)
    order = col.desc().nulls_first() if descending else col.asc().nulls_last()
    with engine.connect() as conn:
        stmt = select(users.c.user_name).order_by(order, users.c.seq)
        return list(conn.execute(stmt).scalars())


def test_sort_users(engine: Engine) -> None:
    assert _sorted_users(engine, "userName") == ["a_b%c", "axbyc", "Bjensen", "Zed"]
    assert _sorted_users(engine, "USERNAME", descending=True) == [
        "Zed",
        "Bjensen",
        "axbyc",
        "a_b%c",
    ]
    assert _sorted_users(engine, "meta.lastModified") == ["Zed", "Bjensen", "axbyc", "a_b%c"]
    # case-insensitive: "Barbara Jensen" < "Percent" < "X Y" < "Z/ed"
    assert _sorted_users(engine, "displayName") == ["Bjensen", "a_b%c", "axbyc", "Zed"]
    assert _sorted_users(engine, "name.givenName") == ["Bjensen", "axbyc", "a_b%c", "Zed"]
    assert _sorted_users(engine, "active") == ["a_b%c", "Zed", "Bjensen", "axbyc"]
    assert _sorted_users(engine, f"{ENT}:department") == ["Bjensen", "a_b%c", "axbyc", "Zed"]
    assert _sorted_users(engine, "meta.resourceType") == ["Bjensen", "a_b%c", "axbyc", "Zed"]


def test_sort_groups(engine: Engine) -> None:
    col = group_sort_column("displayName")
    with engine.connect() as conn:
        names = conn.execute(select(groups.c.display_name).order_by(col)).scalars()
        assert list(names) == ["Empty", "Engineering", "Sales"]


@pytest.mark.parametrize("attr", ["emails", "emails.value", "groups", "bogus", "name", ""])
def test_sort_rejects_multi_valued_and_unknown_user_attrs(attr: str) -> None:
    with pytest.raises(ScimError) as info:
        user_sort_column(attr)
    assert (info.value.status, info.value.scim_type) == (400, "invalidValue")


@pytest.mark.parametrize("attr", ["members", "members.value", "userName", "active"])
def test_sort_rejects_multi_valued_and_unknown_group_attrs(attr: str) -> None:
    with pytest.raises(ScimError) as info:
        group_sort_column(attr)
    assert (info.value.status, info.value.scim_type) == (400, "invalidValue")


# --- SQL shape -------------------------------------------------------------------------------


def test_user_name_eq_uses_the_unique_index_on_sqlite(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/plan.db")
    tables.metadata.create_all(engine)
    stmt = select(users.c.id).where(user_where(parse_filter('userName eq "BJensen"', "User")))
    sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        index_names = [
            row[1] for row in conn.exec_driver_sql("PRAGMA index_list(users)").fetchall()
        ]
        ci_index = [
            name
            for name in index_names
            if [r[2] for r in conn.exec_driver_sql(f"PRAGMA index_info('{name}')")]
            == ["user_name_ci"]
        ]
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    engine.dispose()
    assert len(ci_index) == 1
    assert ci_index[0] in plan, plan
    assert "SCAN" not in plan, plan


def test_booleans_are_bound_as_booleans() -> None:
    where = user_where(parse_filter('active eq "false"', "User"))
    pg = where.compile(dialect=postgresql.dialect())
    assert "false" in str(pg).lower()
    assert all(not isinstance(v, str) for v in pg.params.values())
    lite = where.compile(dialect=sqlite.dialect())
    assert all(not isinstance(v, str) for v in lite.params.values())


def test_user_name_is_compared_to_the_lowered_column_without_lower() -> None:
    sql = str(user_where(parse_filter('userName eq "BJensen"', "User")).compile())
    assert "lower" not in sql.lower()
    assert "user_name_ci" in sql


def test_datetime_binds_are_utc() -> None:
    where = user_where(parse_filter('meta.lastModified gt "2024-01-01T01:00:00+02:00"', "User"))
    params = where.compile(dialect=postgresql.dialect()).params
    (value,) = params.values()
    assert value == datetime(2023, 12, 31, 23, 0, tzinfo=UTC)
    assert value.utcoffset().total_seconds() == 0


def test_ordering_is_code_point_on_postgresql() -> None:
    sql = str(
        user_where(parse_filter('title gt "a"', "User")).compile(dialect=postgresql.dialect())
    )
    assert 'COLLATE "C"' in sql


def test_value_path_filters_use_the_attr_value_index_on_sqlite(tmp_path):
    """emails[...]/roles filters must not scan every user (a correlated EXISTS does on SQLite)."""
    from sqlalchemy import select as _select

    from agent.scim.filter import parse_filter as _parse
    from agent.storage import migrate as _migrate
    from agent.storage.engine import make_engine as _make_engine
    from agent.storage.filter_sql import user_where as _user_where
    from agent.storage.tables import users as _users

    engine = _make_engine(f"sqlite:///{tmp_path}/plan.db")
    _migrate.upgrade(engine)
    for filter_text in ('emails[type eq "work"].value eq "x@y"', 'roles.value eq "Member"'):
        q = _select(_users.c.id).where(_user_where(_parse(filter_text, "User")))
        sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = " ".join(str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "ix_user_values_attr_value" in plan, plan
        assert "SCAN users" not in plan, plan
    engine.dispose()


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [
        ("abc", "abd"),
        ("a", "b"),
        ("a\U0010ffff", "b"),
        ("ab\U0010ffff\U0010ffff", "ac"),
        ("\U0010ffff", None),
        ("a\ud7ff", "a\ue000"),  # U+D800..U+DFFF are surrogates, never in a string
        ("z", "{"),
        ("é", "ê"),
    ],
)
def test_prefix_successor(prefix: str, successor: str | None) -> None:
    from agent.storage.filter_sql import _prefix_successor

    assert _prefix_successor(prefix) == successor


SW_FILTERS = [
    ('userName sw "abc"', "User"),
    ('emails.value sw "abc"', "User"),
    ('emails[type eq "work" and value sw "abc"]', "User"),
    ('displayName sw "abc"', "Group"),
]


def _sw_sql(engine: Engine, filter_text: str, resource_type: str) -> str:
    table, where = (users, user_where) if resource_type == "User" else (groups, group_where)
    stmt = select(table.c.id).where(where(parse_filter(filter_text, resource_type)))
    return str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))


def test_sw_on_indexed_columns_uses_the_index_on_sqlite(tmp_path) -> None:
    """userName sw "abc" (and sw on every *_ci column) is a range the index serves, not a
    LIKE that scans the table (SQLite's LIKE is case-insensitive, so no BINARY index helps)."""
    from agent.storage import migrate
    from agent.storage.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/plan.db")
    migrate.upgrade(engine)
    try:
        for filter_text, resource_type in SW_FILTERS:
            sql = _sw_sql(engine, filter_text, resource_type)
            assert "LIKE" not in sql.upper(), sql
            with engine.connect() as conn:
                plan = " ".join(
                    str(r[3]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
                )
            assert "USING" in plan and "INDEX" in plan, (filter_text, plan)
            assert "SCAN users" not in plan and "SCAN groups" not in plan, (filter_text, plan)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_sw_on_indexed_columns_uses_the_index_on_postgresql(pg_url) -> None:
    """On a database whose collation is code point order (the test database is C.UTF-8) the
    range compares the column as is, so the B-tree index serves it; the planner is told not to
    scan so that a tiny table still shows whether the index *can* be used."""
    from agent.storage import migrate
    from agent.storage.engine import make_engine

    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    try:
        with engine.connect() as conn:
            collation = conn.exec_driver_sql(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()"
            ).scalar_one()
        if collation.lower() not in ("c", "posix", "c.utf-8", "c.utf8"):
            pytest.skip(f"database collation {collation} is not code point order")
        for filter_text, resource_type in SW_FILTERS:
            sql = _sw_sql(engine, filter_text, resource_type)
            assert "LIKE" not in sql.upper() and "COLLATE" not in sql.upper(), sql
            with engine.connect() as conn:
                conn.exec_driver_sql("SET enable_seqscan = off")
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
            assert "Index" in plan, (filter_text, plan)
            assert "Seq Scan on users" not in plan and "Seq Scan on groups" not in plan, plan
    finally:
        engine.dispose()


def test_sw_range_falls_back_to_code_point_collation_on_other_postgresql_databases() -> None:
    """Without the probe's word that the collation is code point order, the range is compared
    under COLLATE "C": exact on every PostgreSQL database, if without the index."""
    sql = str(
        user_where(parse_filter('userName sw "ab"', "User")).compile(dialect=postgresql.dialect())
    )
    assert sql.count('COLLATE "C"') == 2, sql
    assert "LIKE" not in sql.upper()
