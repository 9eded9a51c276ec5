"""What every command shares: exit codes, the --tables argument."""

EXIT_OK, EXIT_FAIL, EXIT_PENDING = 0, 1, 2


def tables_arg(args) -> list[str] | None:
    return [t.strip() for t in args.tables.split(",")] if args.tables else None
