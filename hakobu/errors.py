"""One exception tree for the whole project.

Every error says where (file/line, tenant/table) and what to do. Whether an error is worth a retry
is decided here, in one place (`is_transient`), not at each call site.
"""


class HakobuError(Exception):
    """Base of every error hakobu raises on purpose."""

    transient = False

    def __init__(self, message: str, *, hint: str | None = None, tenant: str | None = None,
                 table: str | None = None):
        self.message = message
        self.hint = hint
        self.tenant = tenant
        self.table = table
        super().__init__(str(self))

    def __str__(self) -> str:
        where = "/".join(p for p in (self.tenant, self.table) if p)
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} — {self.hint}" if self.hint else text


class ConfigError(HakobuError):
    """A tenant file, the cluster file or permissions.csv is wrong. Nothing was changed."""


class ConfigErrors(ConfigError):
    """Several config errors, collected so the user fixes them all in one pass."""

    def __init__(self, errors: list["ConfigError"]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{n} configuration error{'s' if n != 1 else ''}:"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


class SourceError(HakobuError):
    """Reading the MySQL source failed or the source does not fit what the config declares."""


class SourceUnavailable(SourceError):
    """The source server cannot be reached or dropped the connection; a retry may succeed."""

    transient = True


class SchemaError(SourceError):
    """The source table's shape cannot be delivered as declared (no primary key, bad column,
    incompatible type change). Stops this table only."""


class CursorTypeError(SchemaError):
    """The declared cursor column's type cannot order a keyset the way hakobu compares it (a
    string compares by collation in MySQL, by code point in Python; a float has no exact
    successor). Refused at planning, so `hakobu validate` reports it before any run."""


class TypeContractError(SchemaError):
    """A value or type the destination cannot hold exactly."""


class TypeChangeError(SchemaError):
    """A source column's type changed in a way the BigQuery column cannot take without changing
    values (narrower, another type family): this table stops until a backfill reloads it."""


class BinlogNotReady(SourceError):
    """The source's binary log cannot carry change data capture as it is set (no binary log,
    not ROW, not FULL images or metadata, or retention shorter than a snapshot needs). Every
    problem is in `problems`, each naming the variable read and the exact fix; nothing was read.
    Terminal: the fix is a server setting, not a retry."""

    def __init__(self, message: str, problems: list[str], fixes: list[str]):
        self.problems = problems
        self.fixes = fixes
        body = "\n".join([message, *(f"  - {p}" for p in problems)])
        super().__init__(body, hint="; ".join(fixes))

    def __str__(self) -> str:
        return f"{self.message}\n  to fix: {self.hint}"


class SourceTableChanged(SchemaError):
    """A watched table was truncated, dropped, renamed or altered on the source (a DDL in the
    binlog): its change log and the customer's table no longer describe the source, and no row
    event says what the DDL did. The stream stops before it; the fix is a re-snapshot of the
    table (`hakobu stream --cluster C --recover TENANT --tables T`). Terminal."""

    def __init__(self, message: str, *, schema: str, tables: list[str], hint: str):
        self.schema = schema
        self.tables = tables
        super().__init__(message, hint=hint)


class PositionLost(SourceError):
    """A saved binlog position cannot be read from any more: its file was purged, the offset is
    past the end or not an event boundary, or the server is not the one that wrote it (replaced,
    as by an RDS blue/green switch or a restore; or its log reset with RESET MASTER). Reading on
    would silently miss every change since the position, so the tables read from it need a
    full reload (`hakobu backfill`) and a new position. Terminal."""

    def __init__(self, message: str, reasons: list[str], *, hint: str):
        self.reasons = reasons
        super().__init__("\n".join([message, *(f"  - {r}" for r in reasons)]), hint=hint)

    def __str__(self) -> str:
        return f"{self.message}\n  to recover: {self.hint}"


class LoadError(HakobuError):
    """Writing to BigQuery failed."""


class DestinationUnavailable(LoadError):
    transient = True


class GrantError(HakobuError):
    """Applying dataset grants failed."""


class GrantConflict(GrantError):
    """The dataset changed between read and write (etag mismatch)."""

    transient = True


class Stopped(HakobuError):
    """A stop was asked for (SIGTERM, Ctrl-C): the work ended at the next safe point — between
    chunks, or before a read — with nothing half written (watermarks move only after a merge).
    Terminal: a retry would only be stopped again."""


def is_transient(exc: BaseException) -> bool:
    """The single place that decides whether an error is worth retrying."""
    if isinstance(exc, HakobuError):
        return exc.transient
    # Driver and client errors that are known to be passing.
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("pymysql") or module.startswith("sqlalchemy"):
        code = _mysql_errno(exc)
        # 2003 can't connect, 2006 gone away, 2013 lost connection, 1205 lock wait, 1213 deadlock,
        # 1927 connection killed (MariaDB), 1053 server shutdown
        return code in {2003, 2006, 2013, 1205, 1213, 1927, 1053}
    if module.startswith("google.api_core"):
        return name in {"ServiceUnavailable", "InternalServerError", "TooManyRequests",
                        "GatewayTimeout", "BadGateway", "RetryError"}
    if module.startswith(("requests", "urllib3")):
        return name in {"ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout",
                        "ChunkedEncodingError", "ProtocolError", "NewConnectionError"}
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return False


def _mysql_text(exc: BaseException) -> str:
    """The driver's own message ("Can't connect to MySQL server on ..."), without the
    wrappers' class names."""
    seen = exc
    for _ in range(4):
        args = getattr(seen, "args", ())
        if len(args) >= 2 and isinstance(args[0], int):
            return str(args[1])
        seen = getattr(seen, "orig", None) or seen.__cause__
        if seen is None:
            break
    return _first_line(exc)


def _mysql_errno(exc: BaseException) -> int | None:
    seen = exc
    for _ in range(4):
        args = getattr(seen, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
        orig = getattr(seen, "orig", None) or seen.__cause__
        if orig is None:
            return None
        seen = orig
    return None


# -- expected failures of the environment, as one line each with what to do ----------------------

LOCAL_HINT = "for the local embedded default run `make up`, then `source .local/env`"


class CredentialsMissing(LoadError):
    """No credentials for real BigQuery (HAKOBU_BIGQUERY_ENDPOINT unset, no ADC)."""


def mysql_failure(exc: BaseException, where: str, user: str,
                  password_env: str | None) -> "HakobuError | None":
    """A MySQL driver error that says the server is away or refused us, as such; else None."""
    code = _mysql_errno(exc)
    short = _mysql_text(exc)
    if code in (2002, 2003, 2005):
        return SourceUnavailable(
            f"the MySQL server at {where} does not answer ({short})",
            hint="start it, or point the cluster at a running server (host/port in "
                 f"tenants/clusters.yaml, e.g. HAKOBU_MYSQL_HOST/HAKOBU_MYSQL_PORT); {LOCAL_HINT}")
    if code in (1044, 1045, 1698):
        secret = (f"the password in ${password_env} (password_env)" if password_env
                  else "whether the user needs a password (password_env: in clusters.yaml)")
        return SourceError(f"the MySQL server at {where} refused user {user!r}: access denied",
                           hint=f"check {secret} and the user's grants")
    return None


def explain(exc: BaseException, *, tenant: str | None = None) -> HakobuError:
    """Any exception as a HakobuError that says what happened and what to do, decided here:
    hakobu's own as they are; the expected failures of the environment (no BigQuery
    credentials, an emulator or server that does not answer) by name, found anywhere in the
    exception's causes; anything else as unexpected (a bug), named by its type."""
    if isinstance(exc, HakobuError):
        return exc
    found = environment_failure(exc)
    if found is not None:
        found.tenant = found.tenant or tenant
        return found
    return HakobuError(f"unexpected {type(exc).__name__}: {_first_line(exc)}", tenant=tenant,
                       hint="rerun with --debug for the traceback, and report it")


def environment_failure(exc: BaseException) -> "HakobuError | None":
    """The hakobu error, or the expected failure of the environment, that `exc` is or was
    caused by; None for anything else."""
    for e in _chain(exc):
        if isinstance(e, HakobuError):
            return e
        found = _environment(e)
        if found is not None:
            return found
    return None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _environment(e: BaseException) -> "HakobuError | None":
    import os

    name, module = type(e).__name__, type(e).__module__
    endpoint = os.environ.get("HAKOBU_BIGQUERY_ENDPOINT")
    if module.startswith("google.auth"):
        if name == "DefaultCredentialsError":
            return CredentialsMissing(
                "no BigQuery credentials: HAKOBU_BIGQUERY_ENDPOINT is not set, so hakobu talks "
                "to real BigQuery, and no application-default credentials were found",
                hint=f"{LOCAL_HINT}; for real BigQuery `gcloud auth application-default login` "
                     "or GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json")
        return LoadError(f"BigQuery refused the credentials: {name}: {_first_line(e)}",
                         hint="check GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth "
                              "application-default login` again")
    if (module.startswith(("requests", "urllib3")) and "Connection" in name) or \
            isinstance(e, ConnectionRefusedError):
        return bigquery_away(endpoint, e)
    if module.startswith(("pymysql", "sqlalchemy")):
        return mysql_failure(e, "the configured host", "the configured user", None)
    return None


def bigquery_away(endpoint: str | None, e: BaseException | None = None) -> "DestinationUnavailable":
    what = f"the BigQuery emulator at {endpoint}" if endpoint else "BigQuery"
    reason = getattr(e, "reason", None) or e        # urllib's URLError wraps the OSError
    detail = f" ({_first_line(reason)})" if e is not None else ""
    hint = (f"start it and export its URL: {LOCAL_HINT}; or unset HAKOBU_BIGQUERY_ENDPOINT for "
            "real BigQuery") if endpoint else "check the network (proxy, firewall) and retry"
    return DestinationUnavailable(f"{what} does not answer{detail}", hint=hint)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return (text.splitlines() or [type(exc).__name__])[0][:300]
