"""The Dagster resources: what a run talks to, passed through `Definitions(resources=...)`.

- `bigquery` (BigQueryResource): the BigQuery side — an emulator endpoint or real BigQuery with
  a credentials file (else application-default credentials), a default project and job
  location, the API retry deadline. Settings that are set in the environment are given to the
  resource as `dg.EnvVar`s (resolved where the run executes, never stored in the Definitions or
  the run config); unset ones keep their default.
- `mysql` (MySQLResource): the source clusters of tenants/clusters.yaml. Endpoints come from that
  file; each cluster's password is read from the variable its `password_env` names, at the
  moment a connection is first made (hakobu.config.Cluster.password), so no secret reaches
  Dagster's config at all. The resource chooses the reader.
- `io` (HakobuIOResource): the run's IO (hakobu.ports.IO), assembled from the two above as a
  resources.io.LiveIO — one MySQLSource and one ReadGovernor per cluster, made when the step's
  resources are set up and closed when they are torn down: the state lives on the resource
  instance of one execution, never in the process.

The CLI builds its IO with the same builder (`open_io`, from `resources_from_env`), so a command
and a run use the same settings. A test, or another deployment, passes other resources:
`build_definitions(config, resources={...})`, or a subclass of HakobuIOResource whose `make_io`
returns a fake (tests/).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from google.cloud import bigquery
from pydantic import PrivateAttr

from hakobu.ports import IO
from resources.bigquery_client import BigQuerySettings, check_endpoint, make_client
from resources.io import LiveIO

# the environment each setting is taken from (BigQuerySettings.from_env reads the same names)
BIGQUERY_ENV = {"endpoint": "HAKOBU_BIGQUERY_ENDPOINT", "project": "HAKOBU_BIGQUERY_PROJECT",
                "location": "HAKOBU_BIGQUERY_LOCATION",
                "credentials_file": "HAKOBU_BIGQUERY_CREDENTIALS"}
RETRY_ENV = "HAKOBU_BIGQUERY_RETRY_DEADLINE"
READER_ENV = "HAKOBU_READER"
WORK_DIR_ENV = "HAKOBU_WORK_DIR"


class BigQueryResource(dg.ConfigurableResource):
    """BigQuery as configured: an emulator (`endpoint`, anonymous credentials) or real BigQuery
    (`credentials_file`, else application-default credentials). Tenants name their own
    project, dataset and location; `project` and `location` are the defaults for the rest."""

    endpoint: str | None = None
    project: str | None = None
    location: str | None = None
    credentials_file: str | None = None
    retry_deadline_s: float = 600.0

    @classmethod
    def from_env(cls) -> "BigQueryResource":
        """Each setting that is set in the environment, as an EnvVar (resolved at run time)."""
        given: dict[str, Any] = {field: dg.EnvVar(var) for field, var in BIGQUERY_ENV.items()
                                 if os.environ.get(var)}
        if os.environ.get(RETRY_ENV):
            given["retry_deadline_s"] = float(os.environ[RETRY_ENV])
        return cls(**given)

    def settings(self) -> BigQuerySettings:
        return BigQuerySettings(endpoint=self.endpoint or None,
                                retry_deadline_s=self.retry_deadline_s,
                                default_project=self.project or None,
                                credentials_file=self.credentials_file or None,
                                location=self.location or None)

    def client(self, project: str | None = None) -> bigquery.Client:
        return make_client(self.settings(), project)

    def check(self) -> None:
        """Fail at once, with what to do, when the configured emulator does not answer."""
        check_endpoint(self.settings())


class MySQLResource(dg.ConfigurableResource):
    """The source clusters (tenants/clusters.yaml): the reader to use. One source (connection
    pool) and one read governor per cluster are made by the run's `io` for its lifetime."""

    reader: str | None = None            # connectorx | pymysql; None: HAKOBU_READER, connectorx

    @classmethod
    def from_env(cls) -> "MySQLResource":
        return cls(reader=dg.EnvVar(READER_ENV)) if os.environ.get(READER_ENV) else cls()


class HakobuIOResource(dg.ConfigurableResource):
    """The run's IO (hakobu.ports.IO): a LiveIO over `bigquery` and `mysql`, set up with the
    step's resources and closed after it (its pools and read slots given back)."""

    bigquery: BigQueryResource
    mysql: MySQLResource
    work_dir: str | None = None          # staging Parquet files; None: HAKOBU_WORK_DIR or tmp

    _io: IO | None = PrivateAttr(default=None)

    def make_io(self) -> IO:
        """The IO this resource gives (overridden by a test to give a fake)."""
        return build_io(self.bigquery, self.mysql, self.work_dir)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._io = self.make_io()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        io, self._io = self._io, None
        close = getattr(io, "close", None)
        if close is not None:
            close()

    @property
    def io(self) -> IO:
        if self._io is None:
            raise RuntimeError("HakobuIOResource.io is available inside a run (or open_io) only")
        return self._io


def build_io(bigquery_: BigQueryResource, mysql: MySQLResource,
             work_dir: str | None = None) -> LiveIO:
    """The one builder of a live IO, for Dagster runs and the CLI alike."""
    return LiveIO(bigquery_.settings(), Path(work_dir) if work_dir else None,
                  reader=mysql.reader or None)


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The code location's resources, as the environment configures them."""
    bq = BigQueryResource.from_env()
    my = MySQLResource.from_env()
    work_dir = dg.EnvVar(WORK_DIR_ENV) if os.environ.get(WORK_DIR_ENV) else None
    return {"bigquery": bq, "mysql": my,
            "io": HakobuIOResource(bigquery=bq, mysql=my, work_dir=work_dir)}


@contextlib.contextmanager
def open_resource(resource: dg.ConfigurableResource) -> Iterator[Any]:
    """A resource outside a run: its EnvVars resolved, set up, torn down on exit."""
    with resource.process_config_and_initialize_cm() as ready:
        yield ready


@contextlib.contextmanager
def open_io(resources: dict | None = None) -> Iterator[IO]:
    """The IO a command uses: the `io` resource of `resources` (default: resources_from_env),
    set up as a run would set it up, closed on exit."""
    resources = resources or resources_from_env()
    with open_resource(resources["io"]) as ready:
        yield ready.io


def bigquery_from_env() -> BigQueryResource:
    """The `bigquery` resource resolved for use outside a run (the CLI's grants commands)."""
    return BigQueryResource.from_env().process_config_and_initialize()
