"""The Apache access-log formats and their Spark parser, shared by every script of the final stage.

Three formats, told apart by the line itself (no option to set):

    combined         %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
                     Apache's and nginx's default access log
    common           %h %l %u %t "%r" %>s %b
    vhost_combined   %v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-agent}i"
                     Debian's other_vhosts_access.log: the virtual host and port first

    203.0.113.7 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTTP/1.1" 404 512 "-" "curl/8.5.0"
    shop.example:443 203.0.113.7 - - [28/Nov/2026:09:14:03 +0000] "GET / HTTP/1.1" 200 9 "-" "-"

vhost_combined's leading `host:port` is recognised (a token with a colon and digits before the
client address) and skipped: the fields are the combined ones.

`parse_access_log` keeps every input row: a line that does not match, or whose timestamp does not
parse, comes out with `malformed = true` and null fields, so callers can count it or route it aside.
"""
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# One pass of the regex for every line: a line that does not match falls into the second
# alternative (`^.*$`) and yields empty groups, so regexp_replace turns every line into exactly
# len(FIELDS) separated fields, then `split` cuts them: one regex pass a line, where one
# regexp_extract per field runs it once per field. bench/bench_parser.py compares this whole
# parser with 11 bare regexp_extract (raw strings, no conversion), warmed up and interleaved
# (measured: bench/RESULTS.md).
LINE_PATTERN = (
    # vhost_combined's %v:%p, skipped. An IPv4 client or a host name has no colon, an IPv6 client
    # no `:digits ` before its first space; possessive, so a line without it costs no backtracking.
    r'^(?:[^\s:]++:\d++ )?'
    # No field holds \x01 (SEPARATOR: one would shift the fields after it). Apache writes control
    # characters as \xhh, so a line with one is no access log. In the fields' own classes, so it
    # costs no second scan of the line.
    r'([^\s\x01]+) ([^\s\x01]+) ([^\s\x01]+) \[([^\]\x01]+)\] '          # %h %l %u [%t]
    # "%r": method url protocol, or anything else without a quote (e.g. "-")
    r'"(?:([^\s\x01]+) ([^\s\x01]+?)(?: ([^\s\x01]+))?|[^"\x01]*)" '
    r'(\d{3}) (\d+|-)'                                                   # %>s %b
    # "%{Referer}i" "%{User-agent}i" with their \" escapes, unrolled: the plain alternation
    # (?:[^"\\]|\\.)* recurses once per character in Java's regex engine and overflows its stack
    # on a long user agent.
    r'(?: "([^"\\\x01]*(?:\\[^\x01][^"\\\x01]*)*)" "([^"\\\x01]*(?:\\[^\x01][^"\\\x01]*)*)")?'
    r'\s*$'
)
# Every line matches as a whole: a non-log line through the second alternative, with empty
# groups; (?s) lets it span a line break, so no part of the line is left unreplaced.
LOG_PATTERN = LINE_PATTERN + r'|(?s:^.*$)'
FIELDS = ("ip", "ident", "user", "time", "method", "url", "protocol",
          "status", "bytes", "referer", "user_agent")
# LINE_PATTERN's group holding %t (regexp_extract's index): the dead-letter verdict reads only it.
TIME_GROUP = FIELDS.index("time") + 1
SEPARATOR = "\u0001"
TIME_FORMAT = "dd/MMM/yyyy:HH:mm:ss Z"


MONTHS = "JanFebMarAprMayJunJulAugSepOctNovDec"
# The canonical %t, every digit written 0 and the sign +: the shape of the fast path below.
CANONICAL_TIME = "00/Mon/0000:00:00:00 +0000"


def parse_time(time: Column) -> Column:
    """%t (`28/Nov/2026:09:14:03 +0000`) -> a UTC timestamp, null if it is not a valid date.

    The meaning is try_to_timestamp(time, TIME_FORMAT)'s (try_, not to_: with ANSI mode on, Spark
    4's default, a bad date would fail the whole job instead of flagging one line). But Java's
    pattern formatter behind it costs about as much as the line's regex, so the canonical form
    (two-digit day, English month as Apache writes it, four-digit year 1900-2999, a time and an
    offset within their ranges, a day that exists in its month) is computed with integer
    arithmetic on its fixed-width fields (the days since the epoch of a civil date, as in
    H. Hinnant's days_from_civil), and only what is not canonical goes to the formatter, which
    decides. So both paths agree by construction: the fast one only takes what it can prove valid.
    """
    def number(start: int, length: int) -> Column:
        # try_cast: never an error, even where Spark evaluates it for a line that is not canonical.
        return F.substring(time, start, length).try_cast("int")

    # One pass over the 26 characters: every digit becomes 0 and the offset's sign +, so the shape
    # is one comparison (the month, letters, is compared apart).
    shape = F.translate(time, "123456789-", "000000000+")
    month_at = F.instr(F.lit(MONTHS), F.substring(time, 4, 3))
    canonical = ((F.length(time) == len(CANONICAL_TIME))
                 & (F.concat(F.substring(shape, 1, 3), F.substring(shape, 7, 20))
                    == CANONICAL_TIME[:3] + CANONICAL_TIME[6:])
                 & (month_at % 3 == 1))
    day, year = number(1, 2), number(8, 4)
    month = ((month_at + 2) / 3).cast("int")
    hour, minute, second = number(13, 2), number(16, 2), number(19, 2)
    offset_hours, offset_minutes = number(23, 2), number(25, 2)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = (F.when(month == 2, F.when(leap, 29).otherwise(28))
                  .when(month.isin(4, 6, 9, 11), 30).otherwise(31))
    valid = (canonical & year.between(1900, 2999) & day.between(1, month_days) & (hour <= 23)
             & (minute <= 59) & (second <= 59) & (offset_minutes <= 59)
             # Java's offsets stop at +/-18:00.
             & (offset_hours * 60 + offset_minutes <= 18 * 60))
    # days_from_civil: March-based years, so February's leap day is the year's last day.
    shifted_year = year - F.when(month <= 2, 1).otherwise(0)
    era_year = shifted_year % 400
    day_of_year = (((F.lit(153) * (month + F.when(month > 2, -3).otherwise(9)) + 2) / 5).cast("int")
                   + day - 1)
    day_of_era = (era_year * 365 + (era_year / 4).cast("int") - (era_year / 100).cast("int")
                  + day_of_year)
    days = (shifted_year / 400).cast("int") * 146097 + day_of_era - 719468
    sign = F.when(F.substring(time, 22, 1) == "-", -1).otherwise(1)
    seconds = (days.cast("long") * 86400 + hour * 3600 + minute * 60 + second
               - sign * (offset_hours * 3600 + offset_minutes * 60))
    return F.when(valid, F.timestamp_seconds(seconds)).otherwise(
        F.try_to_timestamp(time, F.lit(TIME_FORMAT)))


def parse_access_log(lines: DataFrame) -> DataFrame:
    """Parse the string column `value` into typed fields; `event_time` is UTC.

    Any other input column (e.g. the Kafka key, partition, offset and timestamp the analyzer keeps
    for its dead letters) is passed through, after `malformed`.
    """
    extra = [name for name in lines.columns if name != "value"]
    # Three projections rather than one: every field reads the split line and is guarded by the
    # parsed timestamp, and inside one projection Spark evaluates such a shared expression once per
    # use under CASE WHEN: the regex would run again for every field (bench/bench_parser.py's
    # "one projection"; measured: bench/RESULTS.md).
    # The optimizer keeps the projections apart, since merging them would repeat those expressions.
    split_lines = lines.select(
        "value", *extra,
        F.split(
            F.regexp_replace("value", LOG_PATTERN,
                             SEPARATOR.join(f"${i}" for i in range(1, len(FIELDS) + 1))),
            SEPARATOR,
        ).alias("fields"),
    )
    # get(): null past the end rather than an error (ANSI mode), should a line ever yield fewer.
    raw = {name: F.nullif(F.get("fields", i), F.lit("")) for i, name in enumerate(FIELDS)}
    timed_lines = split_lines.select("value", *extra, "fields",
                                     parse_time(raw["time"]).alias("event_time"))
    parsed = F.col("event_time").isNotNull()

    def keep(column: Column) -> Column:
        # A malformed line keeps only its raw value: no half-parsed fields leak downstream.
        return F.when(parsed, column)

    def dash_is_null(column: Column) -> Column:
        return F.nullif(column, F.lit("-"))

    def unescape(column: Column) -> Column:
        return F.regexp_replace(column, r"\\(.)", "$1")

    return timed_lines.select(
        "value",
        keep(raw["ip"]).alias("ip"),
        keep(dash_is_null(raw["ident"])).alias("ident"),
        keep(dash_is_null(raw["user"])).alias("user"),
        "event_time",
        keep(raw["method"]).alias("method"),
        keep(raw["url"]).alias("url"),
        keep(raw["protocol"]).alias("protocol"),
        keep(raw["status"].try_cast("int")).alias("status"),
        keep(dash_is_null(raw["bytes"]).try_cast("long")).alias("bytes"),
        keep(dash_is_null(unescape(raw["referer"]))).alias("referer"),
        keep(dash_is_null(unescape(raw["user_agent"]))).alias("user_agent"),
        (~parsed).alias("malformed"),
        *extra,
    )
