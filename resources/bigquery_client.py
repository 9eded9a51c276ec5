"""Builds the google-cloud-bigquery client from configuration alone.

HAKOBU_BIGQUERY_ENDPOINT set (e.g. an emulator at http://127.0.0.1:9050): that endpoint, anonymous
credentials. Unset: real BigQuery with a credentials file when one is given
(HAKOBU_BIGQUERY_CREDENTIALS), else application-default credentials (GOOGLE_APPLICATION_CREDENTIALS
or the metadata server). Nothing else in the pipeline knows which of the two it talks to.

`BigQuerySettings.from_env()` is for the app layer and resources only (the core is handed
settings, or a destination); Dagster runs get theirs from resources.dagster.BigQueryResource.
"""

import os
import urllib.error
import urllib.request
from dataclasses import dataclass

import google.auth
from google.api_core.retry import Retry
from google.cloud import bigquery

from hakobu.errors import bigquery_away, explain, is_transient


@dataclass(frozen=True)
class BigQuerySettings:
    endpoint: str | None = None
    retry_deadline_s: float = 600.0
    default_project: str | None = None
    credentials_file: str | None = None   # a service-account (or other) JSON key file
    location: str | None = None           # the client's default job location (datasets and
    #                                       tenants name their own; this is for the others)

    @classmethod
    def from_env(cls) -> "BigQuerySettings":
        return cls(
            endpoint=os.environ.get("HAKOBU_BIGQUERY_ENDPOINT") or None,
            retry_deadline_s=float(os.environ.get("HAKOBU_BIGQUERY_RETRY_DEADLINE", "600")),
            default_project=os.environ.get("HAKOBU_BIGQUERY_PROJECT") or None,
            credentials_file=os.environ.get("HAKOBU_BIGQUERY_CREDENTIALS") or None,
            location=os.environ.get("HAKOBU_BIGQUERY_LOCATION") or None,
        )

    def client(self, project: str | None = None) -> bigquery.Client:
        """A client for `project` (make_client): what the core asks settings it was handed for."""
        return make_client(self, project)

    def retry(self) -> Retry:
        """A retry for API calls, capped so a bad request cannot spin for minutes."""
        return Retry(predicate=is_transient, initial=0.5, maximum=10.0,
                     timeout=self.retry_deadline_s)


def make_client(settings: BigQuerySettings, project: str | None = None) -> bigquery.Client:
    project = project or settings.default_project
    if settings.endpoint:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project or "local", location=settings.location,
                               credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=settings.endpoint))
    from google.auth.exceptions import DefaultCredentialsError

    try:
        if settings.credentials_file:
            creds, file_project = google.auth.load_credentials_from_file(
                settings.credentials_file, scopes=["https://www.googleapis.com/auth/cloud-platform"])
            return bigquery.Client(project=project or file_project, credentials=creds,
                                   location=settings.location)
        return bigquery.Client(project=project, location=settings.location)
    except DefaultCredentialsError as exc:   # the commonest first failure: say what to do
        raise explain(exc) from exc


def check_endpoint(settings: BigQuerySettings, timeout: float = 3.0) -> None:
    """Fail at once, with what to do, when the emulator HAKOBU_BIGQUERY_ENDPOINT names does not
    answer — rather than after the client's retry deadline (minutes). Real BigQuery: nothing
    to check before the first call."""
    if not settings.endpoint:
        return
    url = f"{settings.endpoint.rstrip('/')}/bigquery/v2/projects/{settings.default_project or 'local'}/datasets?maxResults=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return                              # it answers (an error status is still an answer)
    except (OSError, ValueError) as exc:
        raise bigquery_away(settings.endpoint, exc) from None
