"""`./start.sh uninstall` on the real engine (issue 18's command, seen once here): the
project's containers and volumes go, and so do exactly the images built for the stack;
the pulled ones are only named."""

from __future__ import annotations

import re
import subprocess

import pytest
from support.compose import ROOT, compose

pytestmark = pytest.mark.docker

START = (ROOT / "start.sh").read_text()


def built_images() -> list[str]:
    return sorted({service["image"] for service in compose()["services"].values() if "build" in service})


def test_uninstall_removes_the_built_images_and_names_the_pulled_ones(stack_factory):
    stack = stack_factory()
    started = stack.run(timeout=1200)
    assert started.returncode == 0, started.stdout + started.stderr
    built = built_images()
    assert all(stack.docker("image", "inspect", image, check=False).returncode == 0 for image in built)
    # the engine's stand-ins carry these names too: keep them under a second tag, so the
    # images survive for the other engine tests while the names go
    for image in built:
        stack.docker("tag", image, f"clp-keep/{image.replace('/', '-').replace(':', '-')}:latest")
    try:
        result = stack.run("uninstall", timeout=600, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stdout + result.stderr
        for image in built:
            assert stack.docker("image", "inspect", image, check=False).returncode != 0, image
            assert f"Removed image {image}" in result.stdout
        pulled = re.search(r"^PULLED_IMAGES=\(([^)]*)\)$", START, re.MULTILINE).group(1).split()
        assert all(image in result.stdout for image in pulled)
        assert stack.compose("ps", "--all", "--quiet").stdout.strip() == ""
        volumes = stack.docker(
            "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
        )
        assert volumes.stdout.strip() == ""
    finally:
        for image in built:
            keep = f"clp-keep/{image.replace('/', '-').replace(':', '-')}:latest"
            stack.docker("tag", keep, image, check=False)
            stack.docker("image", "rm", keep, check=False)
