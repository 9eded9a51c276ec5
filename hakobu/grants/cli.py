"""`hakobu grants plan|apply`, `hakobu grant`, `hakobu revoke`.

The main CLI calls `register(subparsers)` and then `args.func(args)`; every handler returns the
exit code. `python -m hakobu.grants.cli ...` runs these commands on their own.

Exit codes: 0 done / no changes, 1 error, 2 (`grants plan` only) changes pending.
"""

import argparse
import json
import sys
from pathlib import Path

from hakobu.config import load_config
from hakobu.errors import ConfigError, HakobuError
from hakobu.grants.apply import ApplyReport, apply_dataset_grants, apply_grants, plan_grants
from hakobu.grants.csvfile import (GrantRow, drop_member, normalise_member, parse_grant,
                                   read_rows, set_member_role, write_rows)
from hakobu.grants.plan import DRIFT_POLICIES, render_plans
from resources.dagster import bigquery_from_env

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2


def register(subparsers, **common) -> None:
    """Add the grants commands; `common` (parents, epilog) as the main CLI's other commands."""
    if common.get("epilog"):
        common.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    grants = subparsers.add_parser(
        "grants", help="plan or apply the dataset grants in permissions.csv",
        description="Diff permissions.csv against BigQuery (plan) or make BigQuery match it "
                    "(apply). Grants added outside the CSV are drift: always reported.",
        **common)
    actions = grants.add_subparsers(dest="grants_command", required=True, metavar="{plan,apply}")
    for name, func, text in (
            ("plan", cmd_plan, "show what apply would change; exit 0 none, 2 pending, 1 error"),
            ("apply", cmd_apply, "make every managed dataset's grants match permissions.csv")):
        p = actions.add_parser(name, help=text, description=text, **common)
        p.add_argument("--drift", choices=DRIFT_POLICIES, default="report",
                       help="grants found in BigQuery but not in the CSV: report them (default), "
                            "revert (revoke them) or adopt (write them into the CSV)")
        if name == "plan":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)

    grant = subparsers.add_parser(
        "grant", help="add a grant to permissions.csv and apply that dataset", **common,
        description="Give MEMBER the role ROLE on DATASET (replacing any other role the member "
                    "has there), write it to permissions.csv and apply that dataset.")
    grant.add_argument("dataset", metavar="DATASET", help="project.dataset (or a unique dataset "
                                                          "name)")
    grant.add_argument("member", metavar="MEMBER", help="user:, group:, serviceAccount: or "
                                                        "domain:, e.g. user:alice@example.com")
    grant.add_argument("--role", required=True, metavar="ROLE",
                       help="READER, WRITER or OWNER (or roles/bigquery.dataViewer, ...)")
    grant.set_defaults(func=cmd_grant)

    revoke = subparsers.add_parser(
        "revoke", help="remove a member's grants on a dataset and apply it", **common,
        description="Remove every grant of MEMBER on DATASET from permissions.csv and from "
                    "BigQuery (also one added outside the CSV).")
    revoke.add_argument("dataset", metavar="DATASET")
    revoke.add_argument("member", metavar="MEMBER")
    revoke.set_defaults(func=cmd_revoke)


def _config(args):
    return load_config(getattr(args, "config_dir", None))


def _settings():
    """BigQuery as the Dagster resource `bigquery` is configured (the same builder)."""
    return bigquery_from_env().settings()


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def cmd_plan(args) -> int:
    try:
        _preflight()
        plans, errors = plan_grants(_config(args), settings=_settings(), policy=args.drift)
    except HakobuError as exc:
        return _fail(exc)
    pending = any(p.exists and (p.changes_pending or p.adopted) for p in plans)
    if getattr(args, "json", False):
        print(json.dumps({"pending": pending, "complete": not errors,
                          "errors": [str(e) for e in errors],
                          "datasets": [plan_as_dict(p) for p in plans]}, indent=2))
        return EXIT_ERROR if errors else EXIT_PENDING if pending else EXIT_OK
    if plans:
        print(render_plans(plans))
    for exc in errors:
        print(f"error: {exc}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} dataset(s) could not be planned; the plan is incomplete",
              file=sys.stderr)
        return EXIT_ERROR
    return EXIT_PENDING if pending else EXIT_OK


def plan_as_dict(p) -> dict:
    def grants(gs):
        return [{"role": g.role, "member": g.member} for g in gs]

    return {"dataset": p.dataset, "exists": p.exists, "policy": p.policy,
            "changes_pending": p.changes_pending, "add": grants(p.add),
            "remove": grants(p.remove), "drift": grants(p.drift),
            "reverted": grants(p.reverted), "adopted": grants(p.adopted),
            "unmanaged": list(p.unmanaged)}


def _preflight() -> None:
    """The emulator HAKOBU_BIGQUERY_ENDPOINT names answers (else: at once, what to do)."""
    bigquery_from_env().check()


def cmd_apply(args) -> int:
    try:
        _preflight()
        report = apply_grants(_config(args), settings=_settings(), policy=args.drift)
    except HakobuError as exc:
        return _fail(exc)
    print(report.render())
    return EXIT_ERROR if report.failed else EXIT_OK


def resolve_dataset(text: str, managed) -> str:
    """`project.dataset` as given, or the one managed dataset with that bare name."""
    if text in managed or "." in text:
        return text
    matches = [d for d in managed if d.split(".", 1)[1] == text]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"dataset name {text!r} is ambiguous",
                          hint=f"write one of {', '.join(sorted(matches))}")
    return text  # parse_grant reports it as unknown, with suggestions


def _current_rows(config) -> list[GrantRow]:
    path: Path = config.permissions_file
    if not path.exists():
        return []
    return read_rows(path, config.managed_datasets())


def _edit_and_apply(args, edit, revoke: frozenset[str] = frozenset()) -> int:
    """Validate the file, apply `edit` to its rows, write it, apply the one dataset."""
    try:
        config = _config(args)
        managed = config.managed_datasets()
        dataset = resolve_dataset(args.dataset, managed)
        rows, csv_lines = edit(_current_rows(config), dataset, managed)
    except (ValueError, HakobuError) as exc:
        return _fail(exc)  # nothing written
    path = config.permissions_file
    if write_rows(path, rows):
        print(f"{path}:")
        print("\n".join(csv_lines))
    else:
        print(f"{path}: unchanged")
    try:
        settings = _settings()
        client = settings.client(managed[dataset].project)
        result = apply_dataset_grants(client, config, dataset, rows=rows, settings=settings,
                                      revoke=revoke)
    except HakobuError as exc:
        _fail(exc)
        print(f"{path} is updated; BigQuery is not: run `hakobu grants apply` once the "
              "error is fixed", file=sys.stderr)
        return EXIT_ERROR
    print(ApplyReport([result]).render())
    return EXIT_OK


def cmd_grant(args) -> int:
    def edit(rows, dataset, managed):
        grant = parse_grant(dataset, args.role, args.member, managed)
        new_rows, replaced = set_member_role(rows, grant)
        lines = [f"  - {g.role:<6} {g.member} ({g.dataset})" for g in replaced]
        if not any(r.grant == grant for r in rows):
            lines.append(f"  + {grant.role:<6} {grant.member} ({grant.dataset})")
        return new_rows, lines

    return _edit_and_apply(args, edit)


def cmd_revoke(args) -> int:
    try:
        member = normalise_member(args.member)
    except ValueError as exc:
        return _fail(exc)

    def edit(rows, dataset, managed):
        parse_grant(dataset, "READER", member, managed)  # validates the dataset
        new_rows, dropped = drop_member(rows, dataset, member)
        return new_rows, [f"  - {g.role:<6} {g.member} ({g.dataset})" for g in dropped]

    return _edit_and_apply(args, edit, frozenset({member}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hakobu", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
