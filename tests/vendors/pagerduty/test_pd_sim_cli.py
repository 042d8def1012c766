"""``syncd sim pagerduty`` serves a seeded account the official client can page through."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pagerduty
import trustme


def test_official_client_pages_through_syncd_sim_over_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "sim", "pagerduty", "--port", "0",
         "--seed-incidents", "300", "--certfile", str(cert_file), "--keyfile", str(key_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        desc = json.loads(proc.stdout.readline())
        assert desc["base_url"].startswith("https://127.0.0.1:")
        client = pagerduty.RestApiV2Client(
            desc["credentials"]["token"], default_from=desc["credentials"]["from_email"],
            base_url=desc["base_url"],
            verify=ssl.create_default_context(cafile=str(ca_file)))
        incidents = list(client.iter_all("incidents", params={"date_range": "all"}))
        assert len(incidents) == 300
        assert len({i["id"] for i in incidents}) == 300
    finally:
        proc.terminate()
        proc.wait(timeout=10)
