"""An S3-compatible server on loopback for tests: moto's ThreadedMotoServer (what the
pyarrow and s3fs test suites use), started and stopped by the test, reached through the
standard AWS_ENDPOINT_URL variable like any S3-compatible store (MinIO, Ceph)."""

from __future__ import annotations

import contextlib
import logging
import os

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(bucket: str = "sweeps"):
    """Yield the environment (endpoint + credentials) of a fresh server holding `bucket`;
    the variables are set in os.environ while it runs (Ray workers started then inherit them)."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                          allow_bucket_creation=True).create_dir(bucket)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
