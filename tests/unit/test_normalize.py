"""SQL and URL templates: equal for the same query/call, never carrying a literal."""

from __future__ import annotations

import gc
import random
import string
import threading
import tracemalloc
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from otel_perf.processors.normalize import (
    cache_command_template,
    is_transaction_control,
    normalize_sql,
    path_template,
    url_template,
)

# --- SQL literals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT * FROM users WHERE name = 'alice'", "SELECT * FROM users WHERE name = ?"),
        ("SELECT * FROM users WHERE name = 'it''s a secret'", "SELECT * FROM users WHERE name = ?"),
        ("SELECT * FROM users WHERE name = ''", "SELECT * FROM users WHERE name = ?"),
        ("SELECT * FROM t WHERE a = 42", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = -42", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = 3.14159", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = -0.5", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = 6.02e23", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = 1E-9", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = 0xDEADBEEF", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = X'CAFE'", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = E'line'", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = $$top secret$$", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = $tag$it's $ secret$tag$", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = :user_id", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = %(user_id)s", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = %s", "SELECT * FROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a = $1 AND b = $12", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT * FROM t WHERE a = ?", "SELECT * FROM t WHERE a = ?"),
    ],
)
def test_literals_and_bind_params_become_placeholders(statement: str, expected: str) -> None:
    assert normalize_sql(statement) == expected


def test_leading_dot_float_is_a_literal() -> None:
    # `.5` is a valid float literal in PostgreSQL, MySQL and SQLite.
    assert normalize_sql("SELECT * FROM t WHERE ratio > .75") == "SELECT * FROM t WHERE ratio > ?"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM t WHERE a IN (1, 2, 3)",
        "SELECT * FROM t WHERE a IN (1,2,3,4,5,6,7,8,9,10)",
        "SELECT * FROM t WHERE a IN ( 'x' , 'y' )",
        "SELECT * FROM t WHERE a IN (:p1, :p2, :p3)",
        "SELECT * FROM t WHERE a IN (%s, %s)",
        "SELECT * FROM t WHERE a IN ($1, $2, $3)",
        "SELECT * FROM t WHERE a IN (?, ?, ?, ?)",
        "SELECT * FROM t WHERE a IN (7)",
    ],
)
def test_in_lists_collapse_whatever_their_length(statement: str) -> None:
    assert normalize_sql(statement) == "SELECT * FROM t WHERE a IN (?)"


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO items (id, name) VALUES (1, 'a')",
        "INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO items (id, name) VALUES (1, 'a'),(2, 'b'),(3, 'c'),(4, 'd')",
        "INSERT INTO items (id, name) VALUES (?, ?), (?, ?), (?, ?)",
    ],
)
def test_multi_row_values_collapse(statement: str) -> None:
    assert normalize_sql(statement) == "INSERT INTO items (id, name) VALUES (?)"


def test_comments_are_stripped() -> None:
    statement = "/* controller=orders,user=alice */ SELECT id -- trailing note 42\nFROM orders /* x=1 */"
    assert normalize_sql(statement) == "SELECT id FROM orders"


def test_string_literal_containing_comment_marker_is_stripped_whole() -> None:
    # `--` inside a string is not a comment: the whole literal must go, and what follows stays.
    template = normalize_sql("SELECT * FROM t WHERE note = 'a--b' AND token = 'hunter2'")
    assert template == "SELECT * FROM t WHERE note = ? AND token = ?"


def test_identifiers_with_digits_are_kept() -> None:
    template = normalize_sql(
        "SELECT t1.col2, t2.v3_x FROM table1 t1 JOIN table_2 t2 ON t1.id = t2.id2 WHERE t1.c9 = 5"
    )
    assert (
        template == "SELECT t1.col2, t2.v3_x FROM table1 t1 JOIN table_2 t2 ON t1.id = t2.id2 WHERE t1.c9 = ?"
    )


def test_casts_stay_readable() -> None:
    template = normalize_sql("SELECT '2024-01-01'::date, id::text FROM t WHERE x = 5::bigint")
    assert template == "SELECT ?::date, id::text FROM t WHERE x = ?::bigint"


def test_whitespace_is_collapsed() -> None:
    assert normalize_sql("SELECT  *\n\tFROM   t\n WHERE a =\n 1  ") == "SELECT * FROM t WHERE a = ?"


def test_statements_differing_only_by_literals_normalize_equal() -> None:
    first = normalize_sql(
        "SELECT o.id FROM orders o WHERE o.customer_id = 17 AND o.status = 'paid' "
        "AND o.total > 10.5 AND o.tag IN (1, 2) LIMIT 10"
    )
    second = normalize_sql(
        "SELECT o.id FROM orders o WHERE o.customer_id = 90211 AND o.status = 'it''s' "
        "AND o.total > -3e2 AND o.tag IN (5, 6, 7, 8) LIMIT 500"
    )
    assert first == second
    assert normalize_sql("SELECT * FROM a WHERE x = 1") != normalize_sql("SELECT * FROM b WHERE x = 1")


def test_long_statements_are_bounded() -> None:
    template = normalize_sql("SELECT " + ", ".join(f"column_{i}" for i in range(2000)) + " FROM t")
    assert len(template) <= 2001


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN",
        "begin",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT sa_savepoint_1",
        "RELEASE SAVEPOINT sa_savepoint_1",
        "START TRANSACTION",
        "SET search_path TO ?",
    ],
)
def test_transaction_control(statement: str) -> None:
    assert is_transaction_control(normalize_sql(statement))


@pytest.mark.parametrize(
    "statement",
    ["SELECT 1", "UPDATE t SET a = 1", "INSERT INTO savepoints VALUES (1)", "DELETE FROM commits"],
)
def test_work_is_not_transaction_control(statement: str) -> None:
    assert not is_transaction_control(normalize_sql(statement))


# --- property-style: generated literals never survive ---------------------------------------------

# Inside a string literal anything goes, including what looks like SQL syntax outside one.
_STRING_PIECES = [
    *string.ascii_letters,
    *string.digits,
    " ",
    "-",
    "--",
    "/*",
    "*/",
    "'",
    "$",
    ":name",
    "?",
    "%s",
    "%(x)s",
    "$1",
    "#",
    ";",
    "(",
    ")",
    ",",
    "\n",
    '"',
]


def _random_literal(rng: random.Random) -> tuple[str, str]:
    """(SQL literal text, the distinctive value that must not appear in the template)."""
    kind = rng.choice(["int", "neg", "float", "exp", "string", "hex", "dollar", "xstring"])
    if kind == "int":
        value = str(rng.randint(10_000, 10**12))
        return value, value
    if kind == "neg":
        value = str(rng.randint(10_000, 10**9))
        return "-" + value, value
    if kind == "float":
        value = f"{rng.randint(1000, 99999)}.{rng.randint(1000, 9999)}"
        return value, value
    if kind == "exp":
        value = f"{rng.randint(1000, 9999)}.{rng.randint(10, 99)}e{rng.choice('+-')}{rng.randint(1, 30)}"
        return value, value.split("e")[0]
    if kind == "hex":
        value = "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(12))
        return value, value[2:]
    marker = "Zq" + "".join(rng.choice(string.ascii_letters) for _ in range(10))
    noise = "".join(rng.choice(_STRING_PIECES) for _ in range(rng.randint(0, 12)))
    body = marker + noise
    if kind == "dollar":
        return f"$q${body.replace('$', '')}$q$", marker
    if kind == "xstring":
        return "X'" + "".join(rng.choice("0123456789ABCDEF") for _ in range(10)) + "'", ""
    return "'" + body.replace("'", "''") + "'", marker


# (shape, its template): every generated statement of a shape must normalize to exactly that.
_SHAPES = [
    (
        "SELECT u.id, u.name FROM users u WHERE u.id = {0} AND u.email = {1}",
        "SELECT u.id, u.name FROM users u WHERE u.id = ? AND u.email = ?",
    ),
    (
        "UPDATE accounts SET balance = {0}, note = {1} WHERE account_id = {2}",
        "UPDATE accounts SET balance = ?, note = ? WHERE account_id = ?",
    ),
    ("INSERT INTO events (a, b, c) VALUES ({0}, {1}, {2})", "INSERT INTO events (a, b, c) VALUES (?)"),
    ("SELECT * FROM t2 WHERE x IN ({0}, {1}, {2}) AND y > {0}", "SELECT * FROM t2 WHERE x IN (?) AND y > ?"),
    (
        "SELECT * FROM orders WHERE total BETWEEN {0} AND {1} ORDER BY created_at",
        "SELECT * FROM orders WHERE total BETWEEN ? AND ? ORDER BY created_at",
    ),
    (
        "DELETE FROM sessions WHERE token = {0} OR expires < {1}",
        "DELETE FROM sessions WHERE token = ? OR expires < ?",
    ),
]


def test_generated_literals_never_survive() -> None:
    rng = random.Random(20240607)
    failures = []
    for _ in range(2000):
        shape, expected = rng.choice(_SHAPES)
        literals = [_random_literal(rng) for _ in range(3)]
        statement = shape.format(*(text for text, _ in literals))
        template = normalize_sql(statement)
        leaked = [value for _, value in literals if value and value in template]
        if template != expected or leaked:
            failures.append((statement, template, leaked))
    assert not failures, f"{len(failures)} of 2000 leaked or changed shape, e.g. {failures[:3]}"


# --- URLs ------------------------------------------------------------------------------------------


def test_url_credentials_fragment_and_query_values_removed() -> None:
    template = url_template("https://bob:s3cr3t@api.example.com/orders/42/items?token=abc&b=2&a=1#section-9")
    assert template == "https://api.example.com/orders/{id}/items?a=&b=&token="
    for secret in ("bob", "s3cr3t", "abc", "section", "42"):
        assert secret not in template


def test_url_path_parameters_do_not_leak_session_tokens() -> None:
    # `;jsessionid=…` (Java servlet containers) is a session credential carried in the path.
    template = url_template("https://shop.example.com/cart;jsessionid=QkZxvbnmTplkwe/items")
    assert "QkZxvbnmTplkwe" not in template


def test_url_query_keys_sorted_and_deduplicated() -> None:
    assert url_template("http://h/s?z=1&a=2&z=3&m") == "http://h/s?a=&m=&z="


def test_url_port_kept_and_empty_path_is_root() -> None:
    assert url_template("http://svc:8080") == "http://svc:8080/"
    assert url_template("http://svc:8080/x?") == "http://svc:8080/x"


@pytest.mark.parametrize(
    "segment",
    [
        "42",
        "-7",
        "3.5",
        "550e8400-e29b-41d4-a716-446655440000",
        "550E8400E29B41D4A716446655440000",
        "0123456789abcdef0123",
        "alice@example.com",
        "inv-2024-001",
        "ab123c",
    ],
)
def test_id_like_path_segments_become_id(segment: str) -> None:
    assert url_template(f"https://api.example.com/things/{segment}/detail") == (
        "https://api.example.com/things/{id}/detail"
    )


@pytest.mark.parametrize("segment", ["my-first-post", "red-shirt", "v1", "v2", "api", "ab1c2", "users"])
def test_slugs_and_short_names_are_kept(segment: str) -> None:
    assert url_template(f"https://api.example.com/x/{segment}") == f"https://api.example.com/x/{segment}"


def test_urls_differing_by_ids_template_equal() -> None:
    assert url_template("http://h/users/1/orders/99") == url_template("http://h/users/77/orders/123456#top")


@pytest.mark.parametrize("bad", ["http://[::1", "http://h:99999/x", "http://[not-an-ip]/x"])
def test_invalid_urls_do_not_raise(bad: str) -> None:
    assert isinstance(url_template(bad), str)


def test_path_template() -> None:
    assert path_template("orders/42") == "/orders/{id}"
    assert path_template("/orders/42/lines/7") == "/orders/{id}/lines/{id}"


def test_generated_url_literals_never_survive() -> None:
    rng = random.Random(7)
    failures = []
    for _ in range(1000):
        number = str(rng.randint(1000, 10**9))
        ident = str(uuid.UUID(int=rng.getrandbits(128)))
        hexid = "".join(rng.choice("0123456789abcdef") for _ in range(24))
        email = "u" + "".join(rng.choice(string.ascii_lowercase) for _ in range(8)) + "@mail.test"
        secret = "Qk" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(14))
        user = "usr" + "".join(rng.choice(string.ascii_lowercase) for _ in range(8))
        url = (
            f"https://{user}:{secret}x@api.example.com/accounts/{number}/files/{ident}/blobs/{hexid}"
            f"/owners/{email}?token={secret}&page={number}#frag{secret}"
        )
        template = url_template(url)
        leaked = [value for value in (number, ident, hexid, email, secret, user) if value in template]
        expected = "https://api.example.com/accounts/{id}/files/{id}/blobs/{id}/owners/{id}?page=&token="
        if leaked or template != expected:
            failures.append((url, template, leaked))
    assert not failures, f"{len(failures)} of 1000 leaked, e.g. {failures[:2]}"


@pytest.mark.parametrize(
    ("command", "template"),
    [
        ("GET authors:1", "GET authors:?"),
        ("get authors:abc-123", "GET authors:?"),
        ("GET ?", "GET ?"),  # the Redis instrumentation's sanitised form stays as it is
        ("HGETALL user:42:profile", "HGETALL user:?:profile"),
        ("MGET authors:1 authors:2 authors:3", "MGET authors:? …"),
        ("DEL cart:7 session:9f8a7c7d7e", "DEL cart:? session:?"),
        ("SET session:9f8a7c7d7e hunter2", "SET session:? ?"),  # values never leave
        ("SETEX token:eyJhbGciOi 60 secret", "SETEX token:? ?"),
        ("PING", "PING"),
    ],
)
def test_cache_commands_keep_the_command_and_the_words_of_their_keys(command: str, template: str) -> None:
    assert cache_command_template(command) == template


# --- the caches, bounded in bytes --------------------------------------------------------------


@pytest.fixture
def empty_caches() -> None:
    from otel_perf.processors.normalize import CACHES

    for budget in CACHES.values():
        budget.clear()


def _retained_bytes(run: Callable[[], object]) -> int:
    """What `run` left allocated (traced by tracemalloc) once it returned and its result was dropped."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.usefixtures("empty_caches")
def test_forty_distinct_5mb_statements_leave_the_cache_within_its_byte_bound() -> None:
    """The probe that found it: 40 distinct 5 MB statements kept 200 MB alive (the cache held 8192
    entries, each keyed by the whole statement). Only the first 8000 characters are read, so only
    they are kept; the templates are those of the uncached function."""
    from otel_perf.processors.normalize import CACHES

    uncached = normalize_sql.__wrapped__
    mismatches: list[int] = []

    def normalise_forty() -> None:
        for number in range(40):
            statement = f"INSERT INTO audit_{number} (id, note) VALUES " + "(1, 'x'), " * 500_000
            assert len(statement) > 5_000_000
            expected = uncached(statement, "postgresql")
            assert expected.startswith(f"INSERT INTO audit_{number} (id, note) VALUES (?)")
            for _ in range(2):  # computed, then from the cache
                if normalize_sql(statement, "postgresql") != expected:
                    mismatches.append(number)

    retained = _retained_bytes(normalise_forty)
    assert not mismatches
    sql = CACHES["sql"]
    assert len(sql) == 40 and 0 < sql.currsize <= sql.maxsize
    assert retained < 2 * 1024 * 1024, f"40 statements of 5 MB left {retained / 2**20:.0f} MiB allocated"


@pytest.mark.usefixtures("empty_caches")
def test_each_cache_stays_within_its_byte_bound_measured_by_tracemalloc() -> None:
    """Many more distinct inputs than fit: each cache's own count (`currsize`) stays within its
    bound, and so does the memory really held (tracemalloc): the count is no underestimate."""
    from otel_perf.processors.normalize import CACHES

    functions = {"sql": normalize_sql, "url": url_template, "cache_command": cache_command_template}
    mismatches: list[str] = []

    def fill() -> None:
        for number in range(12_000):
            token = uuid.UUID(int=number).hex
            inputs = {
                "url": f"https://api.example.com/v2/{token}/files/{number}-{token}?s={token}" + "x" * 600,
                "sql": f"SELECT * FROM t WHERE id = {number} AND note = '{token}' /* {'y' * 1400} */",
                "cache_command": f"SET session:{token} {'z' * 400}",
            }
            for name, text in inputs.items():
                template = functions[name](text)
                if number % 97 == 0 and template != functions[name].__wrapped__(text):
                    mismatches.append(text)

    retained = _retained_bytes(fill)
    assert not mismatches
    for name, budget in CACHES.items():
        assert budget.currsize <= budget.maxsize, name
    assert 0 < len(CACHES["url"]) < 12_000 and 0 < len(CACHES["sql"]) < 12_000
    bound = sum(budget.maxsize for budget in CACHES.values())
    assert CACHES["sql"].maxsize < retained < bound, f"{retained / 2**20:.1f} MiB held"


@pytest.mark.usefixtures("empty_caches")
def test_inputs_too_long_to_keep_are_computed_each_time_and_not_kept() -> None:
    from otel_perf.processors.normalize import CACHES

    url = "https://api.example.com/orders/42?q=" + "a" * 5_000_000
    command = "SET big:1 " + "v" * 5_000_000
    assert url_template(url) == "https://api.example.com/orders/{id}?q="
    assert cache_command_template(command) == "SET big:? ?"
    assert CACHES["url"].currsize < 10_000 and CACHES["cache_command"].currsize == 0


@pytest.mark.usefixtures("empty_caches")
def test_the_caches_count_right_under_concurrent_misses() -> None:
    """Threads missing the same and different inputs at once: each entry counted once, the count is
    the sum of what is held."""
    from otel_perf.processors import normalize

    barrier = threading.Barrier(4)

    def work(thread: int) -> None:
        barrier.wait()
        for number in range(3000):
            normalize_sql(f"SELECT * FROM t{number % 500} WHERE x = {thread}", "postgresql")
            url_template(f"http://h/{number % 700}/x{thread}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    for name, memos in (("sql", list(normalize._SQL._by_dialect.values())), ("url", [normalize._URLS])):
        held = [(key, value) for memo in memos for key, value in memo.items()]
        assert len(held) == len(normalize.CACHES[name])
        assert normalize.CACHES[name].currsize == sum(normalize._entry_bytes(k, v) for k, v in held)
