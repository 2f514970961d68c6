"""docker-compose.yml and the Dockerfile: valid for compose, and consistent with each other and
with the package. (The same topology without Docker, a loopback Ray cluster and a real
`prefect server start`, runs in tests/cluster, marked slow.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TOOL = shutil.which("docker-compose")


@pytest.mark.skipif(TOOL is None, reason="docker-compose is not installed (make test installs Debian's)")
@pytest.mark.parametrize("profiles", [[], ["gpu", "s3", "cli"]])
def test_compose_config_is_valid(profiles):
    args = [TOOL, "-f", str(COMPOSE), *[a for p in profiles for a in ("--profile", p)], "config", "-q"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_services_agree_on_addresses_and_storage():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"prefect", "ray-head", "ray-worker", "ray-gpu-worker", "fld", "minio"} <= set(services)
    engine = [n for n, s in services.items() if s.get("image") == "fld-engine:latest"]
    assert set(engine) == {"ray-head", "ray-worker", "ray-gpu-worker", "fld"}
    for name in engine:
        assert "dataset:/data" in services[name]["volumes"], name
        assert services[name]["environment"]["FLD_DATA"].startswith("/data/")
    head_port = re.search(r"--port=(\d+)", services["ray-head"]["command"]).group(1)
    for name in ("ray-worker", "ray-gpu-worker"):
        assert f"--address=ray-head:{head_port}" in services[name]["command"]
    api = services["fld"]["environment"]["PREFECT_API_URL"]
    host, port = re.match(r"http://([\w-]+):(\d+)/api", api).groups()
    assert host == "prefect" and f"127.0.0.1:{port}:{port}" in services["prefect"]["ports"]
    published = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for _, p in published), published  # loopback of the host only
    for name in engine:  # S3 settings reach every container that reads images
        assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(services[name]["environment"]), name
    assert services["minio"]["environment"]["MINIO_ROOT_USER"] == services["fld"]["environment"]["AWS_ACCESS_KEY_ID"]
    assert services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_the_image_holds_every_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert {p.rstrip("*") for p in packages} == copied
