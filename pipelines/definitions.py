"""The code location. `dagster dev -w workspace.yaml` loads `defs` from here.

Tenants come from HAKOBU_CONFIG_DIR/tenants (default: the repository root). A tenant file that is
invalid leaves only its tenant out (logged here, reported by the `tenant_files` sensor and by
`hakobu status`); an error in clusters.yaml, warehouse.yaml or datasets.yaml makes the code
location fail to load with every error listed (see hakobu.config.load_config).
"""

import logging

from hakobu.config import load_config
from pipelines.build import build_definitions

_config = load_config(isolate=True)
for _b in _config.broken:
    logging.getLogger("hakobu").error("tenant %r left out of the code location: %s",
                                      _b.tenant, _b.describe())
defs = build_definitions(_config)
