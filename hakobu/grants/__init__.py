"""Dataset-level BigQuery grants declared in permissions.csv, planned and applied like
infrastructure code: `csvfile` reads and writes the declaration, `plan` diffs it against the live
access entries without IO, `apply` reads and writes BigQuery with the dataset's etag, `cli` is the
command line. Console-added grants are drift: reported, and reverted or adopted only on request.
"""

from hakobu.grants.csvfile import Grant, GrantRow, load_rows, normalise_member, normalise_role
from hakobu.grants.plan import DatasetPlan, DriftPolicy, plan_dataset, render_plans

__all__ = ["DatasetPlan", "DriftPolicy", "Grant", "GrantRow", "load_rows", "normalise_member",
           "normalise_role", "plan_dataset", "render_plans"]
