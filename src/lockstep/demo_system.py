"""The sample distributed monolith the demo builds: three component repos and their versions.

inventory and pricing are libraries, storefront uses both. Each version is real code with its
own tests; pricing v2.0.0 changes its API, which storefront does not support, so the contract
stage rejects that bump. inventory also ships a stateful service the rollout controller runs
(`[components.inventory.deploy]`); v1.2.0's migrates its table, keeping every row.
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

INVENTORY_V13 = INVENTORY_V12 + '''

LOCATIONS = ("main",)
'''

# The inventory service: the component's own code, run by the rollout controller through
# `[components.inventory.deploy]` from the release's pinned commit. It embeds lockstep's promotion
# protocol, so a new release starts read-only beside the old one, is promoted, and fences it.
INVENTORY_SERVICE_V1 = """\
\"\"\"The inventory service: stock counts over HTTP on shared SQLite (GET/PUT /stock/<item>).

Run by lockstep's rollout controller; speaks its promotion protocol (lockstep.rollout.protocol):
a new generation boots read-only beside the leader, is promoted, then fences the old one.
\"\"\"
import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

from lockstep.rollout.protocol import (
    BootRule, Fenced, Hooks, JsonHandler, ManagedService, NotLeader, SharedState, bind_http,
    parse_addr)

SCHEMA = 1


class InventoryHooks(Hooks):
    def migrate(self, conn):
        \"\"\"Run by the leader, in the promotion's transaction: create or upgrade the tables.\"\"\"
        conn.execute("CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, "
                     "count INTEGER NOT NULL)")


def read(service, item):
    conn = service.state.connect_read_only()
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM stock WHERE item = ?", (item,)).fetchone()
    except sqlite3.OperationalError:
        return None  # no leader has created the table yet
    finally:
        conn.close()
    return None if row is None else dict(row)


class InFlight:
    \"\"\"The connections being served, so an exit can answer them first.\"\"\"

    def __init__(self):
        self.count = 0
        self.idle = threading.Condition()

    def __enter__(self):
        with self.idle:
            self.count += 1

    def __exit__(self, *exc):
        with self.idle:
            self.count -= 1
            self.idle.notify_all()


def drain(server, inflight, grace=5.0):
    \"\"\"Stop accepting, answer what was accepted (reads succeed, writes 503), then close.\"\"\"
    server.shutdown()
    server.socket.setblocking(False)
    while True:
        try:
            request, addr = server.get_request()
        except OSError:
            break
        server.process_request(request, addr)
    server.server_close()
    with inflight.idle:
        inflight.idle.wait_for(lambda: inflight.count == 0, grace)


def handler(service, inflight):
    class Handler(JsonHandler):
        def handle(self):
            with inflight:
                super().handle()

        def item(self):
            return unquote(self.route[len("/stock/"):]) if self.route.startswith("/stock/") \\
                else None

        def do_GET(self):
            if self.route == "/info":
                self.send_json(200, {"schema": SCHEMA, "release": service.release,
                                     "generation": service.generation,
                                     "status": service.status})
            elif self.item():
                row = read(service, self.item())
                self.send_json(200 if row else 404, row or {"message": "no such item"})
            else:
                self.send_json(404, {"message": "no such endpoint"})

        def do_PUT(self):
            body = self.read_body()
            if body is None or not self.item():
                return self.send_json(404, {"message": "PUT /stock/<item> with a count"})
            try:
                with service.writing() as conn:
                    conn.execute("INSERT INTO stock (item, count) VALUES (?, ?) ON CONFLICT "
                                 "(item) DO UPDATE SET count = excluded.count",
                                 (self.item(), int(body)))
            except (NotLeader, Fenced) as exc:
                self.send_json(503, {"message": str(exc)})
            except ValueError:
                self.send_json(400, {"message": "the body must be an integer count"})
            else:
                self.send_json(200, {"item": self.item(), "generation": service.generation})

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--public-addr", default="127.0.0.1:0")
    args = p.parse_args()
    release = os.environ.get("LOCKSTEP_RELEASE", "unreleased")
    try:
        service = ManagedService.from_env(SharedState(Path("inventory.sqlite3")), release,
                                          hooks=InventoryHooks(), fence_interval=0.2)
        inflight = InFlight()
        public = bind_http(parse_addr(args.public_addr, "--public-addr"),
                           handler(service, inflight), "public listener")
        rule = service.start()
    except Fenced:
        return 0
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    threading.Thread(target=public.serve_forever, daemon=True).start()
    host, port = public.server_address[:2]
    print(json.dumps({"event": "listening", "public": f"{host}:{port}",
                      "internal": "%s:%d" % service.internal_address,
                      "role": "read-only" if rule is BootRule.READ_ONLY else "leader"}),
          flush=True)
    code = service.wait()
    drain(public, inflight)
    service.close()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
"""

# v1.2.0: each item also counts reserved units; the migration adds the column and keeps every
# row (old rows read as 0 reserved), and reads work against either schema. GET /info lists the
# table's columns, which the demo's migration check reads.
INVENTORY_SERVICE_V2 = INVENTORY_SERVICE_V1.replace("SCHEMA = 1", "SCHEMA = 2").replace(
    '''                     "count INTEGER NOT NULL)")
''', '''                     "count INTEGER NOT NULL)")
        columns = [row[1] for row in conn.execute("PRAGMA table_info(stock)")]
        if "reserved" not in columns:
            conn.execute("ALTER TABLE stock ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0")
''').replace(
    "    return None if row is None else dict(row)",
    '''    return None if row is None else {"reserved": 0, **dict(row)}


def columns(service):
    conn = service.state.connect_read_only()
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(stock)")]
    finally:
        conn.close()''').replace(
    '''"status": service.status})''',
    '''"status": service.status,
                                     "columns": columns(service)})''')

# v1.3.0, the broken one: stock per location. Its migration rebuilds the table with the new
# column but never copies the old rows into it, so every item written before the upgrade is lost
# when it is promoted. Its library tests pass; the queue's upgrade stage rejects it.
INVENTORY_SERVICE_V3 = INVENTORY_SERVICE_V2.replace("SCHEMA = 2", "SCHEMA = 3").replace(
    '''            conn.execute("ALTER TABLE stock ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0")
''', '''            conn.execute("ALTER TABLE stock ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0")
        if "location" not in columns:  # stock per location: rebuild with the new column
            conn.execute("DROP TABLE stock")
            conn.execute("CREATE TABLE stock (item TEXT PRIMARY KEY, count INTEGER NOT NULL, "
                         "reserved INTEGER NOT NULL DEFAULT 0, "
                         "location TEXT NOT NULL DEFAULT 'main')")
''')

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
        ("v1.0.0", {"inventory.py": INVENTORY_V1, "test_inventory.py": INVENTORY_TEST,
                    "service.py": INVENTORY_SERVICE_V1}),
        ("v1.1.0", {"inventory.py": INVENTORY_V11}),
        ("v1.2.0", {"inventory.py": INVENTORY_V12, "service.py": INVENTORY_SERVICE_V2}),
        ("v1.3.0", {"inventory.py": INVENTORY_V13, "service.py": INVENTORY_SERVICE_V3}),
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

# How the rollout controller runs a component of a release (the others are libraries).
DEPLOY = {"inventory": """
[components.inventory.deploy]   # run by `lockstep controller run` (docs/rollouts-controller.md)
command = ["{python}", "service.py"]
args = ["--public-addr", "127.0.0.1:0"]
"""}

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

# The demo's distribution command (tools/dist.py, run by lockstep after each landing in a
# stage-style workspace of the new tag): one reproducible archive of the three components.
DIST_SCRIPT = '''\
\"\"\"Distribution: archive components/<name> of this release's workspace into
$LOCKSTEP_DIST_DIR/shop-<tag>.tar.gz, reproducibly (sorted entries, zero times and owners), and
write pins.json, the versions and commits the tag's manifest pins.\"\"\"
import gzip
import json
import os
import tarfile
import tomllib
from pathlib import Path

components = Path(os.environ["LOCKSTEP_COMPONENTS_DIR"])
out = Path(os.environ["LOCKSTEP_DIST_DIR"])
tag = os.environ["LOCKSTEP_RELEASE"]
config = os.environ["LOCKSTEP_CONFIG"]
manifest = tomllib.loads(Path(os.environ["LOCKSTEP_MANIFEST"]).read_text())
pins = manifest["configurations"][config]


def entry(path, name):
    info = tarfile.TarInfo(name)
    info.mtime = info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_symlink():
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
        return info, None
    info.size = path.stat().st_size
    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    return info, path


with open(out / f"shop-{tag}.tar.gz", "wb") as raw, \\
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \\
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for name in sorted(pins):
        root = components / name
        files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
        for path in files:
            info, data = entry(path, f"{name}/{path.relative_to(root).as_posix()}")
            if data is None:
                tar.addfile(info)
            else:
                with open(data, "rb") as fh:
                    tar.addfile(info, fh)
        print(f"dist: {name} {pins[name]['version']}: {len(files)} file(s)")
(out / "pins.json").write_text(json.dumps(
    {"release": tag, "commit": os.environ["LOCKSTEP_COMMIT"], "configuration": config,
     "components": pins},
    indent=2, sort_keys=True) + "\\n")
print(f"dist: wrote shop-{tag}.tar.gz and pins.json")
'''

SUBMISSIONS = [
    ("inventory", "v1.1.0"),
    ("pricing", "v1.1.0"),
    ("pricing", "v2.0.0"),
    ("storefront", "v1.1.0"),
    ("inventory", "v1.2.0"),
    ("inventory", "v1.3.0"),
]


def config_toml(remotes: str) -> str:
    """The demo's lockstep.toml; `remotes` is the path of the bare remotes, relative."""
    comps = "\n".join(
        f'[components.{name}]\nurl = "{remotes}/{name}.git"\n'
        f'image = "{REGISTRY}/demo/{name}"\ntag_transform = "strip-v"\n'
        f"depends_on = {DEPENDS_ON[name]!r}\n"
        f'owners = ["team-{name}@example.com"]\n'.replace("'", '"') + DEPLOY.get(name, "")
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

# Upgrade the newest integration release to the candidate with no downtime (docs/scenarios.md):
# the checks of checks/demo_checks.py run before, during and after the promotion.
[[stages]]
name = "upgrade"
kind = "upgrade"
timeout = 300
configurations = ["default"]

[scenarios]
plugin = "checks.demo_checks"
step_timeout = 60

[[notifiers]]
name = "owners"
type = "command"
command = ["python3", "hooks/notify_owner.py"]
events = ["rejected", "landed"]

# Distributions (docs/distribution.md): after each landing, tools/dist.py archives the tag's
# pinned components into .lockstep/dist/<tag>/ (shop-<tag>.tar.gz and pins.json).
[distribution]
command = ["python3", "tools/dist.py"]
timeout = 60

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
