"""What 1,000 photos cost on Lambda, from the CPU and wall time per photo measured on this machine."""

from __future__ import annotations

from typing import Any, Final

from bench.common import MEASURED_VCPUS

# AWS Lambda x86_64 list prices (us-east-1, first pricing tier), as published on aws.amazon.com/lambda/pricing.
PRICE_PER_GB_SECOND: Final = 0.0000166667
PRICE_PER_REQUEST: Final = 0.20 / 1_000_000
# Lambda allocates CPU in proportion to memory: 1,769 MB is one vCPU's worth (AWS documentation).
MB_PER_VCPU: Final = 1769


def cost(wall_seconds_per_photo: float, cpu_seconds_per_photo: float, memory_mb: int) -> dict[str, Any]:
    """Lambda cost per 1,000 photos for the batch function, from the pipeline measured here.

    Lambda gives a function ``memory / 1769`` vCPUs' worth of CPU time per second. The batch pipeline is
    CPU-bound with more runnable threads than vCPUs (decode workers + onnxruntime), so on Lambda a photo takes
    its CPU seconds divided by that share. Two ways to get there, both reported:

    * by CPU time (the verdict): CPU seconds per photo measured here (every thread of the process) / Lambda's
      vCPUs. It does not depend on how much of the two vCPUs a noisy neighbour left us during the run.
    * by wall time (the plain scaling): wall seconds per photo here × (vCPUs here / vCPUs there). It assumes both
      vCPUs were ours for the whole run, so it overstates the cost when they were not.
    """
    lambda_vcpus = memory_mb / MB_PER_VCPU
    by_cpu = cpu_seconds_per_photo / lambda_vcpus
    by_wall = wall_seconds_per_photo * MEASURED_VCPUS / lambda_vcpus

    def usd(seconds: float) -> float:
        return seconds * memory_mb / 1024 * PRICE_PER_GB_SECOND * 1000 + PRICE_PER_REQUEST

    return {
        "memory_mb": memory_mb,
        "lambda_vcpus": round(lambda_vcpus, 3),
        "measured_vcpus": MEASURED_VCPUS,
        "scaling": f"CPU s per photo / ({memory_mb} / {MB_PER_VCPU}) vCPU",
        "lambda_seconds_per_photo": by_cpu,
        "usd_per_1000": usd(by_cpu),
        "by_wall_scaling": f"wall s per photo × {MEASURED_VCPUS} / ({memory_mb} / {MB_PER_VCPU})",
        "by_wall_lambda_seconds_per_photo": by_wall,
        "by_wall_usd_per_1000": usd(by_wall),
        "price_per_gb_second_usd": PRICE_PER_GB_SECOND,
        "price_per_request_usd": PRICE_PER_REQUEST,
        "requests_usd_per_1000_batch": PRICE_PER_REQUEST,  # one nightly invocation takes ~1,000 photos or more
        "requests_usd_per_1000_api": PRICE_PER_REQUEST * 1000,  # the API: one request per photo
        "note": "x86_64 list price (us-east-1); the nightly run is one invocation (so ~$0.0000002 of requests per "
        "1,000 photos); excludes S3 and DynamoDB request charges",
    }
