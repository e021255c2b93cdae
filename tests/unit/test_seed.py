"""The NoCloud seed: an ``ansible`` user with passwordless sudo and exactly the run's key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import seed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBomaRunKeyOnlyForThisTest boma-run-0001"


def test_user_data_is_cloud_config() -> None:
    text = seed.user_data("boma-it-askari-0001", KEY + "\n")
    assert text.startswith("#cloud-config\n")
    assert isinstance(yaml.safe_load(text), dict)


def test_user_data_creates_ansible_with_nopasswd_sudo_and_only_that_key() -> None:
    data = yaml.safe_load(seed.user_data("boma-it-askari-0001", KEY + "\n"))
    assert data["hostname"] == "boma-it-askari-0001"
    [user] = data["users"]
    assert user["name"] == seed.ADMIN_USER == "ansible"
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [KEY]
    assert user["lock_passwd"] is True
    # Never through cloud-init: its set_passwords module then restarts sshd mid-first-boot
    # (the image turns password logins off itself).
    assert "ssh_pwauth" not in data
    assert data["disable_root"] is True


def test_meta_data_names_the_instance() -> None:
    data = yaml.safe_load(seed.meta_data("boma-0001", "boma-it-askari-0001"))
    assert data == {"instance-id": "boma-0001", "local-hostname": "boma-it-askari-0001"}


@pytest.mark.skipif(shutil.which("genisoimage") is None or shutil.which("isoinfo") is None,
                    reason="needs genisoimage and isoinfo")
def test_write_seed_makes_a_cidata_iso(tmp_path: Path) -> None:
    iso = seed.write_seed(tmp_path / "seed.iso", instance_id="boma-0001",
                          hostname="boma-it-askari-0001", public_key=KEY)
    assert iso.stat().st_mode & 0o777 == 0o644
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: cidata" in info
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(listing) == ["/meta-data", "/user-data"]
