"""The sample distributed monolith the demo builds: three component repos and their versions.

inventory and pricing are libraries, storefront uses both. Each version is real code with its
own tests; pricing v2.0.0 changes its API, which storefront does not support, so the contract
stage rejects that bump.
"""

from __future__ import annotations

INVENTORY_V1 = '''\
"""Stock levels."""

API_VERSION = 1
REQUIRES: dict[str, int] = {}

_STOCK = {"apple": 12, "pear": 3}


def stock(item: str) -> int:
    return _STOCK.get(item, 0)
'''

INVENTORY_V11 = INVENTORY_V1 + '''

def reserve(item: str, count: int) -> bool:
    """Whether count items can be reserved."""
    return 0 < count <= stock(item)
'''

INVENTORY_V12 = INVENTORY_V11.replace('"pear": 3}', '"pear": 3, "plum": 7}')

INVENTORY_TEST = '''\
import inventory

assert inventory.stock("apple") == 12
assert inventory.stock("nothing") == 0
if hasattr(inventory, "reserve"):
    assert inventory.reserve("pear", 3) and not inventory.reserve("pear", 4)
print("inventory: ok")
'''

PRICING_V1 = '''\
"""Prices in cents."""

API_VERSION = 1
REQUIRES = {"inventory": 1}

_PRICES = {"apple": 50, "pear": 80, "plum": 65}


def price(item: str) -> int:
    return _PRICES[item]
'''

PRICING_V11 = PRICING_V1 + '''

def total(items: dict[str, int]) -> int:
    """The price of a basket."""
    return sum(price(name) * count for name, count in items.items())
'''

PRICING_V2 = '''\
"""Prices with currency: `price` became `quote` (a breaking change, API 2)."""

API_VERSION = 2
REQUIRES = {"inventory": 1}

_PRICES = {"apple": 50, "pear": 80, "plum": 65}


def quote(item: str) -> tuple[int, str]:
    return _PRICES[item], "EUR"
'''

PRICING_TEST = '''\
import pricing

if pricing.API_VERSION == 1:
    assert pricing.price("apple") == 50
else:
    assert pricing.quote("apple") == (50, "EUR")
print("pricing: ok")
'''

STOREFRONT_V1 = '''\
"""The shop: checks stock, then prices the basket."""

import inventory
import pricing

API_VERSION = 1
REQUIRES = {"inventory": 1, "pricing": 1}


def checkout(item: str, count: int) -> int:
    if inventory.stock(item) < count:
        raise ValueError(f"only {inventory.stock(item)} {item} left")
    return pricing.price(item) * count
'''

STOREFRONT_V11 = STOREFRONT_V1 + '''

def receipt(item: str, count: int) -> str:
    return f"{count} x {item}: {checkout(item, count) / 100:.2f}"
'''

STOREFRONT_TEST = '''\
import storefront

assert storefront.checkout("apple", 2) == 100
print("storefront: ok")
'''

REGISTRY = "demo.local"

PRICING_DOCKERFILE = f"""\
# pricing's image: its code on top of the inventory image it was released with
FROM {REGISTRY}/demo/inventory:1.0.0 AS inventory
FROM python:3.11-slim
COPY --from=inventory /app /inventory
COPY pricing.py /app/
"""

STOREFRONT_DOCKERFILE = f"""\
# syntax=docker/dockerfile:1
ARG PRICING_TAG=1.0.0
FROM --platform=$BUILDPLATFORM {REGISTRY}/demo/inventory:1.0.0 AS inventory
FROM {REGISTRY}/demo/pricing:${{PRICING_TAG}} AS pricing
FROM python:3.11-slim
COPY --from=inventory /app /inventory
COPY --from=pricing /app /pricing
COPY storefront.py /app/
"""

STOREFRONT_VALUES = f"""\
# Helm values of the storefront chart
storefront:
  replicas: 2
pricing:
  image:
    repository: {REGISTRY}/demo/pricing   # the price service
    tag: "1.0.0"
"""

# component -> [(version, {file: text})], oldest first
COMPONENTS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "inventory": [
        ("v1.0.0", {"inventory.py": INVENTORY_V1, "test_inventory.py": INVENTORY_TEST}),
        ("v1.1.0", {"inventory.py": INVENTORY_V11}),
        ("v1.2.0", {"inventory.py": INVENTORY_V12}),
    ],
    "pricing": [
        ("v1.0.0", {"pricing.py": PRICING_V1, "test_pricing.py": PRICING_TEST,
                    "deploy/Dockerfile": PRICING_DOCKERFILE}),
        ("v1.1.0", {"pricing.py": PRICING_V11}),
        ("v2.0.0", {"pricing.py": PRICING_V2}),
    ],
    "storefront": [
        ("v1.0.0", {"storefront.py": STOREFRONT_V1, "test_storefront.py": STOREFRONT_TEST,
                    "deploy/Dockerfile": STOREFRONT_DOCKERFILE,
                    "deploy/values.yaml": STOREFRONT_VALUES}),
        ("v1.1.0", {"storefront.py": STOREFRONT_V11}),
    ],
}

DEPENDS_ON = {"inventory": [], "pricing": ["inventory"], "storefront": ["inventory", "pricing"]}

# The stage scripts live in the integration repo; each reads LOCKSTEP_* variables.
STAGE_UNIT = '''\
"""Stage 1: the bumped component's own tests, beside the versions the candidate pins."""
import os
import subprocess
import sys
from pathlib import Path

components = Path(os.environ["LOCKSTEP_COMPONENTS_DIR"])
bumped = components / os.environ["LOCKSTEP_COMPONENT"]
env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in components.iterdir()))
failed = []
for test in sorted(bumped.glob("test_*.py")):
    if subprocess.run([sys.executable, str(test)], env=env).returncode:
        failed.append(test.name)
print("unit:", "failed " + ", ".join(failed) if failed else "all passed")
sys.exit(1 if failed else 0)
'''

STAGE_CONTRACT = '''\
"""Stage 2: every component's REQUIRES matches the API_VERSION pinned beside it."""
import ast
import os
import sys
from pathlib import Path


def constants(path):
    tree = ast.parse(path.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


components = Path(os.environ["LOCKSTEP_COMPONENTS_DIR"])
apis = {p.name: constants(p / f"{p.name}.py") for p in components.iterdir() if p.is_dir()}
problems = []
for name, consts in sorted(apis.items()):
    for dep, wanted in consts.get("REQUIRES", {}).items():
        have = apis.get(dep, {}).get("API_VERSION")
        if have != wanted:
            problems.append(f"{name} requires {dep} API {wanted}, the candidate pins API {have}")
print(f"contract check for configuration {os.environ['LOCKSTEP_CONFIG']}:")
for p in problems:
    print("  " + p)
print("  ok" if not problems else f"  {len(problems)} incompatibility(ies)")
sys.exit(1 if problems else 0)
'''

STAGE_SMOKE = '''\
"""Stage 3: a checkout through the whole system, as a user would do it."""
import os
import sys
from pathlib import Path

components = Path(os.environ["LOCKSTEP_COMPONENTS_DIR"])
sys.path[:0] = [str(p) for p in components.iterdir() if p.is_dir()]
import storefront  # noqa: E402

total = storefront.checkout("pear", 2)
assert total == 160, total
print(f"smoke: 2 pears cost {total} cents")
'''

NOTIFY_HOOK = '''\
"""Command notifier: append each event (JSON on stdin) to ../notifications.jsonl."""
import json
import sys
from pathlib import Path

event = json.load(sys.stdin)
with open(Path(__file__).resolve().parents[2] / "notifications.jsonl", "a") as fh:
    fh.write(json.dumps(event, sort_keys=True) + "\\n")
'''

SUBMISSIONS = [
    ("inventory", "v1.1.0"),
    ("pricing", "v1.1.0"),
    ("pricing", "v2.0.0"),
    ("storefront", "v1.1.0"),
    ("inventory", "v1.2.0"),
]


def config_toml(remotes: str) -> str:
    """The demo's lockstep.toml; `remotes` is the path of the bare remotes, relative."""
    comps = "\n".join(
        f'[components.{name}]\nurl = "{remotes}/{name}.git"\n'
        f'image = "{REGISTRY}/demo/{name}"\ntag_transform = "strip-v"\n'
        f"depends_on = {DEPENDS_ON[name]!r}\n"
        f'owners = ["team-{name}@example.com"]\n'.replace("'", '"')
        for name in COMPONENTS
    )
    return f"""\
# lockstep.toml of the demo system (see docs/config.md)

[integration]
remote = "origin"
branch = "main"
manifest = "manifest.toml"

[identity]
name = "lockstep demo"
email = "lockstep@localhost"

[queue]
retry_backoff = 0.5

{comps}
[[stages]]
name = "unit"
command = ["python3", "stages/unit.py"]
timeout = 120

[[stages]]
name = "contract"
command = ["python3", "stages/contract.py"]
timeout = 60

[[stages]]
name = "smoke"
command = ["python3", "stages/smoke.py"]
timeout = 60
configurations = ["default"]

[[notifiers]]
name = "owners"
type = "command"
command = ["python3", "hooks/notify_owner.py"]
events = ["rejected", "landed"]

# Releases (docs/release.md): each component's tag push builds its image into this OCI layout
# directory (a hook in its bare repository plays its CI); lockstep waits for it, then pins it.
[release]
wait_timeout = "2m"
poll = {{ initial = "0.2s", max = "1s" }}

[registries."{REGISTRY}"]
layout = "../registry"

[[pins]]
repo = "pricing"
component = "inventory"
file = "deploy/Dockerfile"
kind = "dockerfile"

[[pins]]
repo = "storefront"
component = "inventory"
file = "deploy/Dockerfile"
kind = "dockerfile"

[[pins]]
repo = "storefront"
component = "pricing"
file = "deploy/Dockerfile"
kind = "dockerfile"

[[pins]]
repo = "storefront"
component = "pricing"
file = "deploy/values.yaml"
kind = "helm-values"
"""
