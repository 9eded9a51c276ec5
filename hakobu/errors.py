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


class TypeContractError(SchemaError):
    """A value or type the destination cannot hold exactly."""


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
