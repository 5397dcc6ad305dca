"""A local Ray cluster started the way ``run`` starts one is reachable from this machine only.

Its servers (driver, GCS, raylet, agents, workers) used to listen on every interface with
authentication off, so anyone on the network could run code as the user.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env

SCRIPT = """
import ipaddress, json, os, time
import psutil
import ray
from fairfront.search.ray_executor import start_ray

lines = []
start_ray(None, num_cpus=1, log=lines.append)
assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42  # the cluster works over loopback
me = psutil.Process()
session = {p.pid: p.name() for p in [me, *me.children(recursive=True)]}
try:
    sockets = [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
               if c.status == psutil.CONN_LISTEN and c.pid in session]
    error = None
except psutil.AccessDenied as err:
    sockets, error = [], repr(err)
print(json.dumps({"log": lines, "node_ip": ray.util.get_node_ip_address(), "error": error,
                  "listening": [[session[pid], ip, port] for pid, ip, port in sockets]}))
ray.shutdown()
"""


def _loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_a_local_cluster_listens_on_loopback_only(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env().items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    if seen["error"] is not None:
        pytest.skip(f"this platform does not tell which process listens where: {seen['error']}")
    names = {name for name, _, _ in seen["listening"]}
    if not {"gcs_server", "raylet"} <= names:
        pytest.skip(f"this platform does not show the sockets of Ray's servers (saw: {sorted(names)})")
    assert seen["node_ip"] == "127.0.0.1"
    assert [line for line in seen["log"] if "warning" in line] == []
    exposed = [(name, ip, port) for name, ip, port in seen["listening"] if not _loopback(ip)]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    # no dashboard of Ray's own: nothing on its port
    assert all(port != 8265 for _, _, port in seen["listening"])

