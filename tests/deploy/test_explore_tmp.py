import time
from tests.deploy.conftest import *  # noqa
from dagster_graphql import DagsterGraphQLClient

def test_explore(deployment):
    s = deployment.stack
    data = s.graphql("""{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
      displayMetadata { key value }
      locationOrLoadError { __typename ... on RepositoryLocation { repositories { name schedules { name } } }
      ... on PythonError { message } } } } } }""")
    print(data)
    client = DagsterGraphQLClient("127.0.0.1", port_number=s.web_port)
    t0 = time.monotonic()
    rid = client.submit_job_execution("nightly", "hakobu", "__repository__",
        tags={"dagster/partition": "e1", "hakobu/tenant": "e1", "hakobu/cluster": "east"})
    while True:
        r = deployment.instance.get_run_by_id(rid)
        if r.is_finished: break
        time.sleep(0.5)
    print("run", r.status, time.monotonic() - t0)
    rec = deployment.instance.get_run_record_by_id(rid)
    print(rec.start_time, rec.end_time, rec.create_timestamp)
    print(s.logs())
