"""The code location. `dagster dev -w workspace.yaml` loads `defs` from here.

Tenants come from HAKOBU_CONFIG_DIR/tenants (default: the repository root); a config error makes
the code location fail to load with every error listed.
"""

from hakobu.config import load_config
from pipelines.build import build_definitions

defs = build_definitions(load_config())
