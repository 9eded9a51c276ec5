"""A read gate that never waits (hakobu.ports.ReadGate): for reads outside any budget — a
table delivered without a governor, the fakes of the unit tier. A cluster's real gate is its
resources.pressure.ReadGovernor, made by the run's IO."""

import contextlib


class Unlimited:
    def slot(self, tenant: str = "", table: str = ""):
        return contextlib.nullcontext()

    def try_slot(self, tenant: str = "", table: str = ""):
        return contextlib.nullcontext(True)

    def pace(self, tenant: str = "", table: str = "") -> None:
        return None

    def throttled_seconds(self, tenant: str, table: str) -> float:
        return 0.0

    def stats(self) -> dict:
        return {}


def unlimited() -> Unlimited:
    return Unlimited()
