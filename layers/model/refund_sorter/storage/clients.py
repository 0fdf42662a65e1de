"""boto3 clients, made once per process with the retry policy the product relies on.

Adaptive retry mode backs off on throttling (S3 SlowDown, DynamoDB ProvisionedThroughputExceeded) and
rate-limits the client itself, so a nightly batch that hits a throttled table slows down instead of failing.
boto3 honours ``AWS_ENDPOINT_URL``, which is how the same code talks to moto locally; ``sam local invoke``
only passes variables the template declares, so there the endpoint comes from ``REFUND_SORTER_ENDPOINT_URL``
(declared empty in the template).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


def _config() -> Config:
    from botocore.config import Config

    from refund_sorter.config import get_settings

    attempts = get_settings().aws_max_attempts
    return Config(
        retries={"mode": "adaptive", "max_attempts": attempts},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=32,
    )


def _endpoint() -> str | None:
    from refund_sorter.config import get_settings

    return get_settings().endpoint_url or None  # None: boto3's own resolution (AWS_ENDPOINT_URL, then AWS)


@cache
def s3_client() -> S3Client:
    import boto3

    return boto3.session.Session().client("s3", config=_config(), endpoint_url=_endpoint())


@cache
def dynamodb_client() -> DynamoDBClient:
    import boto3

    return boto3.session.Session().client("dynamodb", config=_config(), endpoint_url=_endpoint())


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints or credentials)."""
    s3_client.cache_clear()
    dynamodb_client.cache_clear()
