"""Turn SQL statements and URLs into templates without literals.

Two statements that differ only in their literals are the same query in a loop; the template is
also what leaves the process in alerts, so it must never carry a literal (a password in a WHERE
clause, a token in a query string). Both functions are cached per distinct input: ORM statements
repeat verbatim, so the regexes run once per statement, not once per span. The caches are bounded
in bytes, not in entries (`CACHES`): a process fed huge statements or URLs (a 5 MB bulk INSERT, a
hostile sender) keeps a few MiB of them, not thousands of times their size.

Hand-written because no maintained library does literal-stripping that is both dialect-agnostic
and fast enough for the span path (sqlparse tokenises the whole statement, ~100x slower).
"""

from __future__ import annotations

import re
import string
import sys
import threading
from collections import deque
from collections.abc import Callable
from functools import lru_cache, partial, wraps
from itertools import zip_longest
from typing import NamedTuple
from urllib.parse import urlsplit

# One left-to-right scan, so a comment marker inside a string (or a quote inside a comment) is
# read as part of what encloses it. Unterminated strings and comments (a statement cut short by
# the instrumentation) run to the end: better a lost tail than a leaked literal.
#
# Where dialects disagree on what a character means, the statement is scanned under each reading.
# A backslash escapes a quote in MySQL and in PostgreSQL E'' strings but is plain text in standard
# SQL, and one statement may mix both (E'' next to standard strings): the readings agree up to the
# first token whose extent differs, and from there on the whole rest goes. PostgreSQL and SQL
# Server nest block comments, MySQL and SQLite do not, and no database mixes the two: what either
# reading removes is removed.
_COMMENT = r"/\*.*?(?:\*/|\Z) | --[^\n]*"
_HASH_COMMENT = {"line": r" | \#[^\n]*", "spaced": r" | \#(?=\s|\Z)[^\n]*", "": ""}
_QUOTED = {
    False: r'"(?:[^"]|"")*(?:"|\Z)',
    True: r'"(?:[^"\\]|""|\\.)*\\?(?:"|\Z)',
}
_STRING_BODY = {
    False: r"'(?:[^']|'')*(?:'|\Z)",
    True: r"'(?:[^'\\]|''|\\.)*\\?(?:'|\Z)",
}
_BACKTICKS = r"`(?:[^`]|``)*(?:`|\Z)"
_BRACKETS = r" | \[(?:[^\]]|\]\])*(?:\]|\Z)"
# Oracle's q'[...]' (any delimiter): a quote inside does not end the string.
_Q_QUOTE = r"[nN]?[qQ]'(?:\[.*?\]'|\(.*?\)'|\{.*?\}'|<.*?>'|(?P<qd>[^\s\[({<]).*?(?P=qd)'|.*\Z) |"
_LITERALS = r"""
      [EeNnBbXx]?{string}                             # string, with '' escapes and prefixes
    | \$(?<![\w$]\$)(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)  # dollar-quoted string
    | (?<![\w$.])-?\.?\d(?:[\w.]|(?<=[eE])[-+])*      # number in any notation (1_000, .5, 1e-3, 0xFF,
                                                       # 0b1, cut short: 1.5E-), and anything glued to it
    | %\(\w+\)s | %s                                   # pyformat / format params
    | (?<!:):\w+                                       # named params (:id), not ::casts
    | \$\d+(?:\.\d+)?                                  # numbered params ($1), money ($9.50)
    | \?\d*                                            # qmark params (?, ?1)
"""


class _Dialect(NamedTuple):
    """How a database reads the characters dialects disagree on."""

    double_quotes: str  # "identifier": always a name; "string": always a value; "context": either
    hash_comments: str  # "line": `#` starts a comment (MySQL); "spaced": only `# ` does; "": never
    brackets: bool  # [name] quotes an identifier (SQL Server, SQLite); elsewhere [] hold values
    q_quotes: bool  # Oracle q'[...]'


_ANSI = _Dialect("identifier", "", False, False)
_MYSQL = _Dialect("string", "line", False, False)
_BRACKETED = _Dialect("context", "spaced", True, False)
_UNKNOWN = _Dialect("context", "spaced", False, False)
_DIALECTS = {
    **dict.fromkeys(
        # "..." is always an identifier here: a value is never written in double quotes.
        ("postgresql", "cockroachdb", "redshift", "db2", "ibm.db2", "h2", "hsqldb", "derby",
         "vertica", "trino", "clickhouse"),
        _ANSI,
    ),
    "oracle": _Dialect("identifier", "", False, True),
    "oracle.db": _Dialect("identifier", "", False, True),
    # "..." is a string (MySQL without ANSI_QUOTES; JSON documents).
    **dict.fromkeys(("mysql", "mariadb", "mongodb"), _MYSQL),
    # "..." is an identifier unless it names nothing (SQLite), or a string with QUOTED_IDENTIFIER OFF.
    **dict.fromkeys(("sqlite", "mssql", "mssqlcompact", "microsoft.sql_server"), _BRACKETED),
}  # fmt: skip


@lru_cache(maxsize=64)
def _sql_token(dialect: _Dialect, backslash_escapes: bool) -> re.Pattern[str]:
    """The token pattern for one reading of one dialect; few combinations, compiled once each."""
    literals = _LITERALS.replace("{string}", _STRING_BODY[backslash_escapes])
    if dialect.q_quotes:
        literals = _Q_QUOTE + literals
    names = _BACKTICKS + (_BRACKETS if dialect.brackets else "")
    # Every token starts with one of these: testing that first lets the scan pass over plain SQL
    # ~3x faster than trying each alternative at each position.
    starts = "-/\"'`$.%:?0-9EeNnBbXx" + "#" * bool(dialect.hash_comments)
    starts += "\\[" * dialect.brackets + "Qq" * dialect.q_quotes
    return re.compile(
        rf"""
        (?=[{starts}])
        (?:
          (?P<comment> {_COMMENT}{_HASH_COMMENT[dialect.hash_comments]} )
        | (?P<quoted> {_QUOTED[backslash_escapes]} )
        | (?P<name> {names} )
        | (?P<literal> {literals} )
        )
        """,
        re.VERBOSE | re.DOTALL,
    )


_SQL_PARAM_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_SQL_REPEATED_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_SQL_SPACE = re.compile(r"\s+")
_IDENTIFIER = re.compile(r'"[A-Za-z_][A-Za-z0-9_ .]{0,62}"')
_QUOTED_NAME = re.compile(r"`[A-Za-z_][\w $#@-]{0,127}`|\[[A-Za-z_#@][\w $#@-]{0,127}\]")
# Where SQLite and SQL Server can only read "..." as a name: after these keywords, or next to a dot.
_NAME_KEYWORD_BEFORE = re.compile(
    r"\b(?:FROM|JOIN|UPDATE|INTO|TABLE|AS|SET|INDEX|VIEW|TRIGGER|EXISTS|REFERENCES|WITH|COLUMN)\s*\Z",
    re.IGNORECASE,
)
_NAME_START = frozenset(string.ascii_letters + '_"`[*')
_NAME_CHAR = frozenset(string.ascii_letters + string.digits + '_$"`]')
_COMMENT_MARK = re.compile(r"/\*|\*/")

_MAX_STATEMENT_CHARS = 2000
_SQL_READ_CHARS = _MAX_STATEMENT_CHARS * 4  # what is read of a statement; the rest never matters

Region = tuple[int, int, bool]  # start, end, whether it is only a comment


def _certainly_a_name(text: str, start: int, end: int, plain_from: int) -> bool:
    """`"order".id`, `t."Col"`, `FROM "order"`: places where no dialect reads "..." as a value.

    `plain_from` is where the code since the previous token begins, so a keyword or dot inside
    a comment or string never counts."""
    after = text[end : end + 2]
    if after[:1] == "." and after[1:2] in _NAME_START:
        return True
    if start - 1 >= plain_from and text[start - 1] == "." and start >= 2 and text[start - 2] in _NAME_CHAR:
        return True
    return _NAME_KEYWORD_BEFORE.search(text, max(plain_from, start - 24), start) is not None


def _nested_comment_end(text: str, start: int) -> int:
    depth = 0
    for mark in _COMMENT_MARK.finditer(text, start):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return len(text)


def _regions(text: str, pattern: re.Pattern[str], double_quotes: str, nested_comments: bool) -> list[Region]:
    """What must not leave the process under one reading of the statement, in order."""
    found: list[Region] = []
    search = pattern.search
    pos = 0
    while match := search(text, pos):
        start, end = match.span()
        kind = match.lastgroup
        if kind == "comment":
            if nested_comments and text.startswith("/*", start) and "/*" in text[start + 2 : end]:
                end = _nested_comment_end(text, start)
            found.append((start, end, True))
        elif kind == "quoted":
            token = match.group()
            keep = _IDENTIFIER.fullmatch(token) is not None and (
                double_quotes == "identifier"
                or (double_quotes == "context" and _certainly_a_name(text, start, end, pos))
            )
            if not keep:
                found.append((start, end, False))
        elif kind == "name":
            if _QUOTED_NAME.fullmatch(match.group()) is None:
                found.append((start, end, False))
        else:
            found.append((start, end, False))
        pos = end if end > start else end + 1
    return found


def _agreed(readings: list[list[Region]], length: int) -> list[Region]:
    """The first reading's regions up to where any other reading disagrees; from there on, one region.

    Before the first token the readings disagree on, every reading (and every mix of them, as
    PostgreSQL mixes E'' strings with standard ones) scanned the same tokens; after it, nothing
    is known about where literals end, so nothing is kept."""
    first = readings[0]
    cut = length
    for other in readings[1:]:
        for mine, theirs in zip_longest(first, other, fillvalue=(length, length, False)):
            if mine != theirs:
                cut = min(cut, mine[0], theirs[0])
                break
    if cut == length:
        return first
    return [region for region in first if region[1] <= cut] + [(cut, length, False)]


def _union(variants: list[list[Region]]) -> list[Region]:
    """Everything removed under any variant is removed; overlapping regions become one."""
    merged: list[Region] = []
    for start, end, comment in sorted(region for regions in variants for region in regions):
        if merged and start < merged[-1][1]:
            last_start, last_end, last_comment = merged[-1]
            merged[-1] = (last_start, max(last_end, end), last_comment and comment)
        else:
            merged.append((start, end, comment))
    return merged


def _dialect_of(db_system: str | None) -> _Dialect:
    return _DIALECTS.get(db_system.lower(), _UNKNOWN) if db_system else _UNKNOWN


def _normalize_sql(statement: str, db_system: str | None = None) -> str:
    """`normalize_sql` without its cache."""
    return _sql_template(statement, _dialect_of(db_system))


def _sql_template(statement: str, dialect: _Dialect) -> str:
    text = statement[:_SQL_READ_CHARS]
    escapes = (False, True) if "\\" in text else (False,)
    nesting = (False, True) if text.count("/*") > 1 else (False,)
    variants = []
    for nested in nesting:
        # A database reads all its comments one way, but may mix string conventions.
        readings = [_regions(text, _sql_token(dialect, b), dialect.double_quotes, nested) for b in escapes]
        variants.append(readings[0] if len(readings) == 1 else _agreed(readings, len(text)))
    regions = variants[0] if len(variants) == 1 else _union(variants)
    pieces = []
    pos = 0
    for start, end, comment in regions:
        pieces.append(text[pos:start])
        pieces.append(" " if comment else "?")
        pos = end
    pieces.append(text[pos:])
    text = _SQL_SPACE.sub(" ", "".join(pieces)).strip()
    # Collapse IN-lists and multi-row VALUES after literals became "?": (?, ?, ?) → (?).
    text = _SQL_PARAM_LIST.sub("(?)", text)
    text = _SQL_REPEATED_ROWS.sub("(?)", text)
    if len(text) > _MAX_STATEMENT_CHARS:
        text = text[:_MAX_STATEMENT_CHARS] + "…"
    return text


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "START TRANSACTION", "SET ")


def is_transaction_control(template: str) -> bool:
    """Statements that frame work rather than do it: never an N+1 on their own."""
    return template.upper().startswith(_TRANSACTION_CONTROL)


# A path segment is kept only when it reads like a route word (`orders`, `order-lines`, `v2`,
# `by-name`, `index.html`): lowercase or Capitalized words joined by - _ . ~, short, at most two
# digits. Everything else (ids, slugs with numbers, mixed-case or random runs, base64, JWTs, API
# keys) could be a value or a credential, so it becomes {id}: a lost word costs readability, a kept
# token is a leak.
_ROUTE_WORD = re.compile(r"[-_.~]?(?:[a-z0-9]+|[A-Z][a-z0-9]*)(?:[-_.~]+(?:[a-z0-9]+|[A-Z][a-z0-9]*))*")
_MAX_ROUTE_WORD = 32
# Not a word: no letter, 3+ digits, a letter run too long for a word (`internationalization` is
# rarer in a route than a random lowercase token), 5 consonants in a row (random text).
_NOT_A_WORD = re.compile(r"\A[^A-Za-z]*\Z|\d\D*\d\D*\d|[A-Za-z]{17}|[b-df-hj-np-tv-xz]{5}", re.IGNORECASE)
# Credentials whose body can be all lowercase (GitHub, Stripe, Slack, GitLab, npm, PyPI, Hugging
# Face, Shopify); mixed-case ones (AWS `AKIA…`, JWTs `eyJ…`) never read as route words anyway.
_SECRET_PREFIXES = (
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk_live_", "sk_test_", "rk_live_", "rk_test_",
    "pk_live_", "pk_test_", "whsec_", "xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xapp-", "glpat-", "gldt-",
    "npm_", "pypi-", "hf_", "shpat_", "sk-",
)  # fmt: skip
_QUERY_KEY = re.compile(r"[^\[\]]+(?:\[[^\[\]]*\])*")  # `page`, `filter[name]`, `ids[]`
_QUERY_KEY_PART = re.compile(r"[^\[\]]+")


def _is_route_word(segment: str) -> bool:
    """Whether a segment is one of the route's own words rather than a value (see above)."""
    return (
        len(segment) <= _MAX_ROUTE_WORD
        and _ROUTE_WORD.fullmatch(segment) is not None
        and not segment.startswith(_SECRET_PREFIXES)
        and _NOT_A_WORD.search(segment) is None
    )


def _segment_template(segment: str) -> str:
    # Path parameters (`cart;jsessionid=…`) carry session tokens: keep the name only.
    segment = segment.split(";", 1)[0]
    if not segment or _is_route_word(segment):
        return segment
    return "{id}"


def _template_query_key(key: str) -> str:
    """Keys are names (`page`, `filter[name]`, `X-Amz-Signature`), unless one carries a value."""
    if not key:
        return key
    if _QUERY_KEY.fullmatch(key) and all(_is_route_word(part) for part in _QUERY_KEY_PART.findall(key)):
        return key
    return "{id}"


def _url_template(url: str) -> str:
    """`url_template` without its cache."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "{invalid-url}"
    path = "/".join(_template_segment(segment) for segment in parts.path.split("/"))
    query = ""
    if parts.query:
        keys = sorted({_template_query_key(pair.split("=", 1)[0]) for pair in parts.query.split("&") if pair})
        query = "?" + "&".join(f"{key}=" for key in keys)
    authority = f"{host}:{port}" if port else host
    prefix = f"{parts.scheme}://{authority}" if parts.scheme else authority
    return f"{prefix}{path or '/'}{query}"


def path_template(path: str) -> str:
    """A bare path (`/orders/42`) templated like a URL's path."""
    return url_template(path if path.startswith("/") else "/" + path)


# Redis commands whose every argument is a key (the rest take one key, then values).
_MULTI_KEY_COMMANDS = frozenset(
    (
        "MGET",
        "DEL",
        "EXISTS",
        "UNLINK",
        "TOUCH",
        "WATCH",
        "SDIFF",
        "SINTER",
        "SUNION",
        "PFCOUNT",
        "GET_MULTI",
        "GETS",
    )
)


def _cache_key_template(key: str) -> str:
    """`authors:42:profile` → `authors:?:profile`: the key's words stay (they say what is cached),
    ids, hashes and tokens go, like a URL's path segments."""
    return ":".join(part if _is_route_word(part) else "?" for part in key.split(":"))


def _cache_command_template(command: str) -> str:
    """`cache_command_template` without its cache."""
    parts = command.split()
    if not parts:
        return command
    name = parts[0].upper()
    if len(parts) == 1:
        return name
    keys = parts[1:] if name in _MULTI_KEY_COMMANDS else parts[1:2]
    templates = list(dict.fromkeys("?" if key == "?" else _cache_key_template(key) for key in keys))
    if len(keys) > len(templates):
        templates.append("…")  # MGET of many keys of one kind: one template, however many keys
    if len(parts) > 1 + len(keys):
        templates.append("?")  # the values
    return " ".join([name, *templates])


# --- caches bounded in bytes -------------------------------------------------------------------
#
# A hit is one dict look-up in C, no lock: as fast as `functools.lru_cache`, which these replace
# because it bounds entries, not bytes (8192 entries of 5 MB statements kept 200 MB alive for 40).
# Entries leave in the order they came (not by recency, which would cost a lock and a re-ordering on
# every hit): a hot statement evicted is computed once more, ~8 µs, once per turn of the budget.

_ENTRY_OVERHEAD = 160  # bytes per entry besides its strings: the dict slot (and spare room), the order queue


def _entry_bytes(key: str, value: str) -> int:
    return sys.getsizeof(key) + (0 if value is key else sys.getsizeof(value)) + _ENTRY_OVERHEAD


class _Budget:
    """A byte bound on one or more memos; the oldest entries go first."""

    __slots__ = ("_lock", "_order", "currsize", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize  # bytes
        self.currsize = 0  # bytes held now: keys, values and `_ENTRY_OVERHEAD` each
        self._lock = threading.Lock()
        self._order: deque[tuple[_Memo, str]] = deque()

    def add(self, memo: _Memo, key: str, value: str) -> None:
        size = _entry_bytes(key, value)
        with self._lock:
            if key in memo:  # another thread computed it meanwhile
                return
            dict.__setitem__(memo, key, value)
            self._order.append((memo, key))
            self.currsize += size
            while self.currsize > self.maxsize:
                old_memo, old_key = self._order.popleft()
                self.currsize -= _entry_bytes(old_key, dict.pop(old_memo, old_key))

    def clear(self) -> None:
        with self._lock:
            for memo, key in self._order:
                dict.pop(memo, key, None)
            self._order.clear()
            self.currsize = 0

    def __len__(self) -> int:
        return len(self._order)


class _Memo(dict[str, str]):
    """Results by input, within a `_Budget`. Inputs longer than `max_chars` are not kept: with
    `by_prefix` (the result depends only on the first `max_chars`), their prefix is; otherwise they
    are computed each time."""

    __slots__ = ("_budget", "_by_prefix", "_compute", "_max_chars")

    def __init__(
        self, compute: Callable[[str], str], budget: _Budget, max_chars: int, *, by_prefix: bool = False
    ) -> None:
        super().__init__()
        self._compute = compute
        self._budget = budget
        self._max_chars = max_chars
        self._by_prefix = by_prefix

    def __missing__(self, key: str) -> str:
        if len(key) > self._max_chars:
            return self[key[: self._max_chars]] if self._by_prefix else self._compute(key)
        value = self._compute(key)
        self._budget.add(self, key, value)
        return value


_MAX_DB_SYSTEMS = 64  # distinct `db.system` values remembered (any number are read correctly)


class _SqlMemos(dict[str | None, _Memo]):
    """The SQL memo for each `db_system` value: one memo per dialect, the values that name it
    remembered (a few: the databases an app talks to) so that a hit does not lower-case it again."""

    __slots__ = ("_by_dialect",)

    def __init__(self, budget: _Budget) -> None:
        super().__init__()
        self._by_dialect = {
            dialect: _Memo(partial(_sql_template, dialect=dialect), budget, _SQL_READ_CHARS, by_prefix=True)
            for dialect in {_UNKNOWN, *_DIALECTS.values()}
        }

    def __missing__(self, db_system: str | None) -> _Memo:
        memo = self._by_dialect[_dialect_of(db_system)]
        if len(self) < _MAX_DB_SYSTEMS:
            self[db_system] = memo
        return memo


# Name → budget, for tests and benchmarks (`currsize`, `maxsize` in bytes; `clear()`).
CACHES = {
    "sql": _Budget(16 * 1024 * 1024),
    "url": _Budget(4 * 1024 * 1024),
    "url_segment": _Budget(1024 * 1024),
    "cache_command": _Budget(4 * 1024 * 1024),
}
_SQL = _SqlMemos(CACHES["sql"])
_URLS = _Memo(_url_template, CACHES["url"], 16 * 1024)
# Route words repeat across URLs that differ in their ids; a segment longer than a word is an {id}.
_template_segment = _Memo(_segment_template, CACHES["url_segment"], 256).__getitem__
_CACHE_COMMANDS = _Memo(_cache_command_template, CACHES["cache_command"], 16 * 1024)


@wraps(_normalize_sql, assigned=())
def normalize_sql(statement: str, db_system: str | None = None) -> str:
    """`SELECT * FROM t WHERE id = 42 AND x IN (1,2,3)` → `SELECT * FROM t WHERE id = ? AND x IN (?)`.

    `db_system` (the span's `db.system`/`db.system.name`) selects the dialect's quoting rules.
    Cached (`__wrapped__`: uncached); only the first 8000 characters are read, and kept."""
    return _SQL[db_system][statement]


@wraps(_url_template, assigned=())
def url_template(url: str) -> str:
    """`https://u:p@api.x/orders/42/items?token=abc` → `https://api.x/orders/{id}/items?token=`.

    Drops credentials, fragment and every query value; keeps only path segments that read as the
    route's own words (`orders`, `order-lines`, `v2`) and replaces the rest, ids and tokens, by {id}.
    """
    return _URLS[url]


@wraps(_cache_command_template, assigned=())
def cache_command_template(command: str) -> str:
    """`GET authors:1` → `GET authors:?`; `SET session:9f8a… <value>` → `SET session:? ?`.

    A cache key is not SQL (`:1` is a value, not a named parameter) and its values never leave:
    only the command and the words of its keys are kept; an already sanitised `GET ?` stays as is.
    """
    return _CACHE_COMMANDS[command]
