"""The unit tier's IO (hakobu.ports.IO): scripted sources per cluster name, in-memory datasets
per project.dataset, and each cluster's real ReadGovernor algorithm without server probes."""

from hakobu.config import Cluster, Config, Tenant
from hakobu.errors import HakobuError
from resources.pressure import ReadGovernor
from tests.fakes.destination import InMemoryDestination
from tests.fakes.source import ScriptedSource


class FakeIO:
    def __init__(self, *sources: ScriptedSource):
        self.sources = {s.cluster.name: s for s in sources}
        self.datasets: dict[str, InMemoryDestination] = {}
        self.gates: dict[str, ReadGovernor] = {}
        self.granted: list[str] = []

    def source(self, cluster: Cluster) -> ScriptedSource:
        s = self.sources.setdefault(cluster.name, ScriptedSource(cluster))
        s.cluster = cluster                       # the configured zone, lag and budget
        return s

    def gate(self, cluster: Cluster) -> ReadGovernor:
        if cluster.name not in self.gates:
            self.gates[cluster.name] = ReadGovernor(cluster.name, cluster.read_budget)
        return self.gates[cluster.name]

    def customer(self, tenant: Tenant) -> InMemoryDestination:
        d = tenant.destination
        key = f"{d.project}.{d.dataset}"
        if key not in self.datasets:
            self.datasets[key] = InMemoryDestination(d.project, d.dataset, d.location)
        return self.datasets[key]

    def warehouse(self, config: Config, tenant: Tenant):
        raise HakobuError("warehouse: the unit tier has no fake warehouse (tests/fakes/io.py); "
                          "the integration tier delivers it")

    def grant_new_dataset(self, config: Config, dest) -> None:
        self.granted.append(f"{dest.project}.{dest.dataset}")
